//! The Kafka listener of the real `shale` binary, driven by clients nobody
//! on this project wrote: librdkafka (kcat and confluent-kafka),
//! kafka-python, kafkajs, and Apache Kafka's own Java client and tools,
//! installed by the test command (`scripts/test.sh` sets SHALE_KCAT,
//! SHALE_KAFKA_PYTHON, SHALE_KAFKAJS_MODULES and
//! SHALE_KAFKA_JAVA_CLASSPATH). The client scripts are in `tests/kafka/`,
//! the Java checks in `tests/java/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::json;
use shale_tests::kafka::{client, kafka_address, run, start};
use shale_tests::{Backend, Process, Shale};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka")
}

fn python(script: &str, kafka: &str, url: &str, checks: &[&str]) -> anyhow::Result<Command> {
    let mut c = Command::new(client("SHALE_KAFKA_PYTHON")?);
    c.arg(scripts().join(script)).args(checks).env("KAFKA_BOOTSTRAP", kafka).env("SHALE_URL", url);
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_produces_and_consumes_through_shale_on_every_backend() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let (shale, kafka) = start(dir.path(), &backend, "kafka-confluent").await?;
        let checks = [
            "round_trips",
            "http_to_kafka",
            "idempotent",
            "group_rebalance",
            "group_rebalance_848",
            "errors",
        ];
        let what = format!("confluent-kafka on {}", backend.name());
        run(python("confluent_client.py", &kafka, &shale.url, &checks)?, &what).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_and_kafkajs_round_trip_and_consume_in_groups() -> anyhow::Result<()> {
    eprintln!("local disk only: the store is exercised by the librdkafka test on every backend");
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-clients").await?;
    run(python("kafka_python_client.py", &kafka, &shale.url, &[])?, "kafka-python").await?;
    let mut node = Command::new("node");
    node.arg(scripts().join("kafkajs_client.js"))
        .env("KAFKA_BOOTSTRAP", &kafka)
        .env("NODE_PATH", client("SHALE_KAFKAJS_MODULES")?);
    run(node, "kafkajs").await?;
    Ok(())
}

/// The checks of `tests/java` run against one `shale dev`, in one JVM.
const JAVA_CHECKS: [&str; 5] =
    ["round_trip", "cooperative_group", "consumer_protocol_group", "tools", "tools_admin"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_java_client_and_kafkas_tools_work_against_shale() -> anyhow::Result<()> {
    eprintln!("local disk only: the store is exercised by the librdkafka test on every backend");
    let classpath = client("SHALE_KAFKA_JAVA_CLASSPATH")?;
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-java").await?;
    // one JVM for every check
    let mut java = Command::new("java");
    java.arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .args(["-cp", &classpath, "dev.shale.checks.Checks", &kafka, &shale.url])
        .args(JAVA_CHECKS);
    let out = run(java, "the Java client and Kafka's tools").await?;
    for check in JAVA_CHECKS {
        ensure!(
            out.contains(&format!("java check {check} passed")),
            "{check} did not report passing:\n{out}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_round_trips_every_codec_and_agrees_with_http() -> anyhow::Result<()> {
    eprintln!("local disk only: the store is exercised by the librdkafka test on every backend");
    let kcat = client("SHALE_KCAT")?;
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-kcat").await?;
    let http = shale.client();
    http.create_topic("kcat", 1).await?;
    let mut expected = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let lines: String = (0..5).map(|i| format!("{codec}-{i}:value {i} of {codec}\n")).collect();
        let mut produce = Command::new(&kcat);
        produce.args(["-b", &kafka, "-P", "-t", "kcat", "-K:", "-z", codec, "-H", "codec=kcat"]);
        produce
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = produce.kill_on_drop(true).spawn()?;
        child.stdin.take().context("stdin")?.write_all(lines.as_bytes()).await?;
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
        ensure!(out.status.success(), "kcat -P -z {codec}: {}", String::from_utf8_lossy(&out.stderr));
        expected.extend((0..5).map(|i| (format!("{codec}-{i}"), format!("value {i} of {codec}"))));
    }
    let mut consume = Command::new(&kcat);
    consume.args(["-b", &kafka, "-C", "-t", "kcat", "-e", "-q", "-f", "%o|%k|%s|%h\\n"]);
    let out = run(consume, "kcat -C").await?;
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    ensure!(rows.len() == expected.len(), "kcat read {} records, not {}", rows.len(), expected.len());
    let (status, fetched) = http.fetch("kcat", 0, "offset=0&max_records=100").await?;
    ensure!(status == 200, "fetch: {fetched}");
    let records = fetched["records"].as_array().context("records")?;
    for (i, ((row, (key, value)), record)) in rows.iter().zip(&expected).zip(records).enumerate() {
        ensure!(
            row[0] == i.to_string() && row[1] == key && row[2] == value && row[3] == "codec=kcat",
            "kcat row {i}: {row:?}"
        );
        ensure!(record["key"] == json!(key) && record["value"] == json!(value), "HTTP record {i}: {record}");
        ensure!(
            record["headers"] == json!([{"key": "codec", "value": "kcat"}]),
            "HTTP headers {i}: {record}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_over_tls_takes_shale_tokens_and_refuses_others() -> anyhow::Result<()> {
    eprintln!("local disk only: authentication is a property of the listener");
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs)?;
    shale_tests::certs::make_certs(&certs)?;
    let (cert, key) = (
        format!("--tls-cert={}", certs.join("server.pem").display()),
        format!("--tls-key={}", certs.join("server.key").display()),
    );
    let data = d.join("data");
    std::fs::create_dir_all(&data)?;
    // shale dev over HTTPS, started directly: the harness's client does not trust the test CA
    let args = ["dev", "--listen=127.0.0.1:0", "--kafka-listen=127.0.0.1:0", "--auth", &cert, &key];
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--data-dir={}", data.display()));
    let log_path = data.join("shale.log");
    let shale = Process::start(args, log_path.clone()).await?;
    let kafka = kafka_address(&log_path).await?;
    let token = std::fs::read_to_string(data.join("admin.token"))?.trim().to_owned();
    let ca = certs.join("ca.pem").display().to_string();
    let sasl = |password: &str| {
        json!({"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.username": "token",
               "sasl.password": password, "ssl.ca.location": ca})
    };
    let mut ok =
        python("confluent_client.py", &kafka, &shale.url, &["round_trips", "group_rebalance", "revoked"])?;
    ok.env("KAFKA_CONFIG", sasl(&token).to_string()).env("SHALE_TOKEN", &token).env("SHALE_CA", &ca);
    run(ok, "confluent-kafka over SASL_SSL").await?;
    let mut node = Command::new("node");
    node.arg(scripts().join("kafkajs_client.js"))
        .env("KAFKA_BOOTSTRAP", &kafka)
        .env("KAFKA_SASL_TOKEN", &token)
        .env("KAFKA_CA", &ca)
        .env("NODE_PATH", client("SHALE_KAFKAJS_MODULES")?);
    run(node, "kafkajs over SASL_SSL").await?;
    // a wrong token, and no SASL at all, get nothing through
    for (what, config) in [
        ("a wrong token", sasl("not-a-token")),
        ("no SASL", json!({"security.protocol": "SSL", "ssl.ca.location": ca})),
    ] {
        let mut refused = python("confluent_client.py", &kafka, &shale.url, &["refused"])?;
        refused.env("KAFKA_CONFIG", config.to_string());
        run(refused, what).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_listener_off_loopback_needs_auth() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about the listener's address");
    let dir = tempfile::tempdir()?;
    let data = format!("--data-dir={}", dir.path().display());
    let mut command = Command::new(shale_tests::process::binary());
    command.args(["dev", &data, "--listen=127.0.0.1:0", "--kafka-listen=0.0.0.0:0"]).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), command.output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "shale dev served Kafka on 0.0.0.0 without auth");
    ensure!(stderr.contains("--kafka-listen") && stderr.contains("--auth"), "no reason given: {stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_on_first_use_with_the_flag() -> anyhow::Result<()> {
    eprintln!("local disk only: auto-creation is the listener's, whatever the store");
    let kcat = client("SHALE_KCAT")?;
    let dir = tempfile::tempdir()?;
    let args = ["--kafka-listen=127.0.0.1:0", "--kafka-auto-create-topics", "--kafka-default-partitions=3"];
    let shale = Shale::start(dir.path(), &Backend::Local, "kafka-auto", &args).await?;
    let kafka = kafka_address(&dir.path().join("shale.log")).await?;
    let mut produce = Command::new(&kcat);
    produce.args(["-b", &kafka, "-P", "-t", "born", "-p", "2"]).stdin(std::process::Stdio::piped());
    let mut child = produce.kill_on_drop(true).spawn()?;
    child.stdin.take().context("stdin")?.write_all(b"first\n").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    ensure!(status.success(), "kcat -P to a new topic failed: {status}");
    let described = shale.client().get("/v1/topics/born").await?;
    let partitions = described.1["partitions"].as_array().map(Vec::len);
    ensure!(described.0 == 200 && partitions == Some(3), "the topic made on first use: {described:?}");
    let (status, fetched) = shale.client().fetch("born", 2, "offset=0").await?;
    ensure!(status == 200 && fetched["records"][0]["value"] == "first", "fetched {fetched}");
    Ok(())
}
