//! The Kafka listener of the real `shale` binary, driven by clients nobody
//! on this project wrote: librdkafka (kcat and confluent-kafka),
//! kafka-python, kafkajs, and Apache Kafka's own Java client and tools,
//! installed by the test command (`scripts/test.sh` sets SHALE_KCAT,
//! SHALE_KAFKA_PYTHON, SHALE_KAFKAJS_MODULES and
//! SHALE_KAFKA_JAVA_CLASSPATH). The client scripts are in `tests/kafka/`,
//! the Java checks in `tests/java/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::json;
use shale_tests::{Backend, Process, Shale};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka")
}

/// A client the test command installs, or why the test cannot run.
fn client(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| {
        format!("{var} is not set: run the test command (scripts/test.sh), which installs the Kafka clients")
    })
}

/// Runs a client program; fails with its output unless it exits 0.
async fn run(mut command: Command, what: &str) -> anyhow::Result<String> {
    command.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .with_context(|| format!("{what} took over 240 s"))??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", out.status);
    eprintln!("{what}: {}", stdout.trim());
    Ok(stdout.into_owned())
}

/// `shale dev` with a Kafka listener on a free port; answers it and the
/// Kafka address.
async fn start(dir: &Path, backend: &Backend, prefix: &str) -> anyhow::Result<(Shale, String)> {
    let shale = Shale::start(dir, backend, prefix, &["--kafka-listen=127.0.0.1:0"]).await?;
    let kafka = kafka_address(&dir.join("shale.log")).await?;
    Ok((shale, kafka))
}

/// The Kafka listener's address, read from the server's log once it is
/// there (so no port is picked twice).
async fn kafka_address(log: &Path) -> anyhow::Result<String> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .find_map(|l| l.split_once("kafka listener started addr=").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(addr) = addr {
            return Ok(addr.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no kafka listener in {}", log.display())
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

/// A Kafka request frame: header v1 (key, version, correlation id, client id) and body.
fn frame(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation.to_be_bytes());
    f.extend_from_slice(&4i16.to_be_bytes());
    f.extend_from_slice(b"test");
    f.extend_from_slice(body);
    let mut out = (f.len() as i32).to_be_bytes().to_vec();
    out.extend(f);
    out
}

async fn answer(stream: &mut tokio::net::TcpStream) -> anyhow::Result<Vec<u8>> {
    let len = tokio::time::timeout(Duration::from_secs(10), stream.read_i32()).await??;
    let mut body = vec![0; usize::try_from(len)?];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_requests_get_kafka_error_codes_on_a_connection_that_stays_open() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about the protocol, not the store");
    let dir = tempfile::tempdir()?;
    let (_shale, kafka) = start(dir.path(), &Backend::Local, "kafka-raw").await?;
    let mut stream = tokio::net::TcpStream::connect(&kafka).await?;
    // ApiVersions at a version from the future: v0 answer, UNSUPPORTED_VERSION (35), and the list
    stream.write_all(&frame(18, 99, 1, &[])).await?;
    let a = answer(&mut stream).await?;
    ensure!(a[0..4] == 1i32.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    ensure!(a[4..6] == 35i16.to_be_bytes(), "error code {:?}", &a[4..6]);
    let keys = i32::from_be_bytes(a[6..10].try_into()?);
    ensure!(keys >= 15, "only {keys} APIs listed");
    // DescribeAcls (29), not served: an answer carrying UNSUPPORTED_VERSION, not a hang-up
    let describe_acls_v1 = [1u8, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff, 1, 1];
    stream.write_all(&frame(29, 1, 2, &describe_acls_v1)).await?;
    let a = answer(&mut stream).await?;
    ensure!(a[0..4] == 2i32.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    // throttle_time_ms, then error_code
    ensure!(a[8..10] == 35i16.to_be_bytes(), "DescribeAcls answer {a:?}");
    // Metadata v1 for a topic that does not exist: UNKNOWN_TOPIC_OR_PARTITION (3)
    let mut metadata = 1i32.to_be_bytes().to_vec();
    metadata.extend_from_slice(&7i16.to_be_bytes());
    metadata.extend_from_slice(b"missing");
    stream.write_all(&frame(3, 1, 3, &metadata)).await?;
    let a = answer(&mut stream).await?;
    ensure!(a[0..4] == 3i32.to_be_bytes(), "correlation id");
    let needle = [&3i16.to_be_bytes()[..], &7i16.to_be_bytes()[..], b"missing"].concat();
    ensure!(
        a.windows(needle.len()).any(|w| w == needle.as_slice()),
        "no UNKNOWN_TOPIC_OR_PARTITION for missing: {a:?}"
    );
    // still open: ApiVersions v0 answers with no error
    stream.write_all(&frame(18, 0, 4, &[])).await?;
    let a = answer(&mut stream).await?;
    ensure!(
        a[0..4] == 4i32.to_be_bytes() && a[4..6] == [0, 0],
        "ApiVersions v0 after the errors: {:?}",
        &a[..6]
    );
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
async fn a_half_sent_frame_is_closed_and_idle_connections_do_not_stop_producers() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about connections, not the store");
    rlimit::increase_nofile_limit(4096)?;
    let dir = tempfile::tempdir()?;
    let shale = Shale::start(
        dir.path(),
        &Backend::Local,
        "kafka-hostage",
        &["--kafka-listen=127.0.0.1:0", "--body-timeout-ms=1000"],
    )
    .await?;
    let kafka = kafka_address(&dir.path().join("shale.log")).await?;
    // two bytes of a frame's length, then nothing: closed once the frame timeout passes
    let mut half = tokio::net::TcpStream::connect(&kafka).await?;
    half.write_all(&[0, 0]).await?;
    let started = std::time::Instant::now();
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), half.read(&mut rest)).await;
    ensure!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a half-sent frame kept its connection: {read:?}");
    ensure!(started.elapsed() < Duration::from_secs(5), "closed only after {:?}", started.elapsed());
    // 1 000 idle connections, then a producer is still served
    let mut idle = Vec::with_capacity(1000);
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(&kafka).await?);
    }
    let kcat = client("SHALE_KCAT")?;
    let http = shale.client();
    http.create_topic("busy", 1).await?;
    let mut produce = Command::new(&kcat);
    produce.args(["-b", &kafka, "-P", "-t", "busy", "-K:"]).stdin(std::process::Stdio::piped());
    let mut child = produce.kill_on_drop(true).spawn()?;
    child.stdin.take().context("stdin")?.write_all(b"k:v1\nk:v2\n").await?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    ensure!(status.success(), "kcat -P failed beside 1000 idle connections: {status}");
    let (status, fetched) = http.fetch("busy", 0, "offset=0").await?;
    ensure!(status == 200 && fetched["records"].as_array().map(Vec::len) == Some(2), "fetched {fetched}");
    drop(idle);
    Ok(())
}

/// Fetch v4 of one partition from `offset`, long-polling up to `max_wait_ms`.
fn fetch_v4(topic: &str, offset: i64, max_wait_ms: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&max_wait_ms.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&i16::try_from(topic.len()).unwrap_or(i16::MAX).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // one partition
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(1i32 << 20).to_be_bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_request_in_flight_is_answered_when_the_gateway_drains() -> anyhow::Result<()> {
    eprintln!("local disk only: this is about shutdown, not the store");
    let dir = tempfile::tempdir()?;
    let (mut shale, kafka) = start(dir.path(), &Backend::Local, "kafka-drain").await?;
    shale.client().create_topic("quiet", 1).await?;
    let mut stream = tokio::net::TcpStream::connect(&kafka).await?;
    // a long-poll on an empty partition is in flight when SIGTERM comes
    stream.write_all(&frame(1, 4, 7, &fetch_v4("quiet", 0, 3000))).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shale.signal("TERM")?;
    let a = answer(&mut stream).await.context("the fetch in flight was not answered on shutdown")?;
    ensure!(a[0..4] == 7i32.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    // then the connection closes, and the process exits
    let mut rest = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest)).await;
    ensure!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the drained connection stayed open: {read:?}");
    ensure!(shale.wait_exit(Duration::from_secs(15)).await?, "shale did not exit after draining");
    ensure!(
        tokio::net::TcpStream::connect(&kafka).await.is_err(),
        "the listener still accepts after shutdown"
    );
    Ok(())
}

/// Produce v7 of one batch of `count` records from an idempotent producer;
/// answers the partition's error code and base offset.
async fn produce_idempotent(
    stream: &mut tokio::net::TcpStream,
    correlation: i32,
    (producer, epoch, sequence): (i64, i16, i32),
    count: usize,
) -> anyhow::Result<(i16, i64)> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: producer,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(bytes::Bytes::from(format!("{sequence}.{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut batch = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut batch, records.iter(), &options)?;
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(batch.freeze()));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("seq")))
        .with_partition_data(vec![partition]);
    let request =
        ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![topic]);
    let mut body = bytes::BytesMut::new();
    request.encode(&mut body, 7)?;
    stream.write_all(&frame(0, 7, correlation, &body)).await?;
    let a = answer(stream).await?;
    ensure!(a[0..4] == correlation.to_be_bytes(), "correlation id {:?}", &a[0..4]);
    let mut rest = bytes::Bytes::copy_from_slice(&a[4..]);
    let response = ProduceResponse::decode(&mut rest, 7)?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("no partition in the produce answer")?;
    Ok((p.error_code, p.base_offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producers_sequences_are_checked_as_kafka_checks_them() -> anyhow::Result<()> {
    eprintln!("local disk only: sequence checks are the controller's, whatever the store");
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-seq").await?;
    shale.client().create_topic("seq", 1).await?;
    let mut s = tokio::net::TcpStream::connect(&kafka).await?;
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    const INVALID_PRODUCER_EPOCH: i16 = 47;
    ensure!(produce_idempotent(&mut s, 1, (1000, 0, 0), 2).await? == (0, 0), "the first batch");
    // a gap: sequence 2 is next, 5 is refused and nothing is written
    let gap = produce_idempotent(&mut s, 2, (1000, 0, 5), 1).await?;
    ensure!(gap.0 == OUT_OF_ORDER_SEQUENCE_NUMBER, "a sequence gap answered {gap:?}");
    ensure!(produce_idempotent(&mut s, 3, (1000, 0, 2), 1).await? == (0, 2), "the next batch");
    // a retry of the first batch: its original offset, nothing written
    ensure!(produce_idempotent(&mut s, 4, (1000, 0, 0), 2).await? == (0, 0), "a retried batch");
    // a new epoch starts at sequence 0; the old epoch is fenced
    let restart = produce_idempotent(&mut s, 5, (1000, 1, 3), 1).await?;
    ensure!(restart.0 == OUT_OF_ORDER_SEQUENCE_NUMBER, "a new epoch not at 0 answered {restart:?}");
    ensure!(produce_idempotent(&mut s, 6, (1000, 1, 0), 1).await? == (0, 3), "the new epoch's first batch");
    let zombie = produce_idempotent(&mut s, 7, (1000, 0, 3), 1).await?;
    ensure!(zombie.0 == INVALID_PRODUCER_EPOCH, "the old epoch answered {zombie:?}");
    // HTTP sees exactly the four records appended, in order
    let (status, fetched) = shale.client().fetch("seq", 0, "offset=0").await?;
    let values: Vec<String> = fetched["records"]
        .as_array()
        .context("records")?
        .iter()
        .filter_map(|r| r["value"].as_str().map(str::to_owned))
        .collect();
    ensure!(status == 200 && values == ["0.0", "0.1", "2.0", "0.0"], "fetched {values:?}");
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

/// Lines of four words from eight, the same for a seed.
fn lines(seed: u64, count: usize) -> Vec<String> {
    const WORDS: [&str; 8] = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "kiwi"];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut word = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        WORDS[(state % WORDS.len() as u64) as usize]
    };
    (0..count).map(|_| (0..4).map(|_| word()).collect::<Vec<_>>().join(" ")).collect()
}

/// The latest count of each word in `words-out`, read over HTTP.
async fn word_counts(shale: &Shale) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut latest = std::collections::BTreeMap::new();
    for partition in 0..4 {
        let mut from = 0;
        loop {
            let (status, page) = shale
                .client()
                .fetch("words-out", partition, &format!("offset={from}&max_records=5000"))
                .await?;
            ensure!(status == 200, "reading words-out: {status} {page}");
            let records = page["records"].as_array().context("records")?;
            if records.is_empty() {
                break;
            }
            for r in records {
                let (Some(word), Some(count)) = (r["key"].as_str(), r["value"].as_str()) else {
                    bail!("record {r}")
                };
                latest.insert(word.to_owned(), count.parse()?);
            }
            from = page["next_offset"].as_u64().context("next_offset")?;
        }
    }
    Ok(latest)
}

/// Waits until every word's latest count is at least what the input holds
/// (at least once: never lower), or fails with both.
async fn counts_reach(shale: &Shale, input: &[String], within: Duration) -> anyhow::Result<()> {
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for word in input.iter().flat_map(|l| l.split(' ')) {
        *expected.entry(word.to_owned()).or_default() += 1;
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let counts = word_counts(shale).await?;
        if expected.iter().all(|(w, n)| counts.get(w).is_some_and(|c| c >= n)) {
            eprintln!("word counts {counts:?} (input {expected:?})");
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "counts {counts:?} never reached {expected:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One Kafka Streams instance (`tests/java`'s WordCount) in a JVM of its
/// own, its output in `log`.
fn word_count(
    classpath: &str,
    kafka: &str,
    state: &Path,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let out = std::fs::File::create(log)?;
    let mut java = Command::new("java");
    java.arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .args(["-cp", classpath, "dev.shale.checks.WordCount", kafka, "words"])
        .arg(state)
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    Ok(java.spawn()?)
}

/// Waits for `needle` to appear `times` times in a log.
async fn logged(log: &Path, needle: &str, times: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "no {needle:?} in {}:\n{text}", log.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_streams_word_count_survives_losing_an_instance() -> anyhow::Result<()> {
    eprintln!("local disk only: Streams exercises the listener; the store is exercised elsewhere");
    let classpath = client("SHALE_KAFKA_JAVA_CLASSPATH")?;
    let kcat = client("SHALE_KCAT")?;
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-streams").await?;
    for topic in ["words-in", "words-out"] {
        shale.client().create_topic(topic, 4).await?;
    }
    let logs = [dir.path().join("streams-a.log"), dir.path().join("streams-b.log")];
    let mut a = word_count(&classpath, &kafka, &dir.path().join("state-a"), &logs[0])?;
    let _b = word_count(&classpath, &kafka, &dir.path().join("state-b"), &logs[1])?;
    for log in &logs {
        logged(log, "streams running", 1, Duration::from_secs(120)).await?;
    }
    let produce = |batch: &[String]| {
        let mut kcat = std::process::Command::new(&kcat);
        kcat.args(["-b", &kafka, "-P", "-t", "words-in"]).stdin(std::process::Stdio::piped());
        let input = batch.join("\n") + "\n";
        async move {
            let mut child = tokio::process::Command::from(kcat).kill_on_drop(true).spawn()?;
            child.stdin.take().context("stdin")?.write_all(input.as_bytes()).await?;
            let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
            ensure!(status.success(), "kcat -P failed: {status}");
            anyhow::Ok(())
        }
    };
    // both instances count: a store per task, a repartition topic between
    let mut input = lines(1, 500);
    produce(&input).await?;
    counts_reach(&shale, &input, Duration::from_secs(90)).await?;
    // one is killed; the other takes its tasks and restores their stores
    // from the changelog, so counts go on from where they were
    a.start_kill()?;
    a.wait().await?;
    let more = lines(2, 500);
    produce(&more).await?;
    input.extend(more);
    counts_reach(&shale, &input, Duration::from_secs(120)).await?;
    logged(&logs[1], "streams running", 2, Duration::from_secs(10))
        .await
        .context("the survivor never rebalanced")?;
    let topics = shale.client().get("/v1/topics").await?.1.to_string();
    ensure!(
        topics.contains("words-counts-changelog") && topics.contains("words-counts-repartition"),
        "Streams' internal topics: {topics}"
    );
    Ok(())
}

/// A Kafka Connect worker of the distributed cluster `shale-connect`, in a
/// JVM of its own, with its REST API on `rest_port`.
fn connect_worker(
    classpath: &str,
    kafka: &str,
    dir: &Path,
    name: &str,
    rest_port: u16,
) -> anyhow::Result<tokio::process::Child> {
    let config = dir.join(format!("worker-{name}.properties"));
    let settings = [
        format!("bootstrap.servers={kafka}"),
        "group.id=shale-connect".into(),
        "config.storage.topic=connect-configs".into(),
        "offset.storage.topic=connect-offsets".into(),
        "status.storage.topic=connect-status".into(),
        "config.storage.replication.factor=1".into(),
        "offset.storage.replication.factor=1".into(),
        "status.storage.replication.factor=1".into(),
        "offset.storage.partitions=5".into(),
        "status.storage.partitions=3".into(),
        format!("listeners=http://127.0.0.1:{rest_port}"),
        "rest.advertised.host.name=127.0.0.1".into(),
        "key.converter=org.apache.kafka.connect.storage.StringConverter".into(),
        "value.converter=org.apache.kafka.connect.storage.StringConverter".into(),
        "offset.flush.interval.ms=1000".into(),
        // a lost worker's tasks move within seconds, not the default 5 minutes
        "scheduled.rebalance.max.delay.ms=2000".into(),
        "session.timeout.ms=6000".into(),
        "heartbeat.interval.ms=1000".into(),
        "plugin.discovery=only_scan".into(),
    ];
    std::fs::write(&config, settings.join("\n"))?;
    let out = std::fs::File::create(dir.join(format!("worker-{name}.log")))?;
    let mut java = Command::new("java");
    java.arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .args(["-cp", classpath, "org.apache.kafka.connect.cli.ConnectDistributed"])
        .arg(&config)
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    Ok(java.spawn()?)
}

/// A free port on loopback, for a worker's REST API.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Calls a worker's REST API until it answers 2xx (Connect answers 409
/// while its group rebalances).
async fn connect_rest(
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
    within: Duration,
) -> anyhow::Result<serde_json::Value> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut request = http.request(method.clone(), url).timeout(Duration::from_secs(10));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let last = match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(r.json().await.unwrap_or_default()),
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        ensure!(tokio::time::Instant::now() < deadline, "{method} {url}: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `file` holds every line of `lines` (at least once).
async fn file_holds(file: &Path, lines: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let have: std::collections::BTreeSet<&str> = text.lines().collect();
        let missing = lines.iter().filter(|l| !have.contains(l.as_str())).count();
        if missing == 0 {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} lacks {missing} of {} lines",
            file.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_connect_in_distributed_mode_moves_a_killed_workers_tasks() -> anyhow::Result<()> {
    eprintln!("local disk only: Connect exercises the listener; the store is exercised elsewhere");
    let classpath = client("SHALE_KAFKA_JAVA_CLASSPATH")?;
    let dir = tempfile::tempdir()?;
    let (shale, kafka) = start(dir.path(), &Backend::Local, "kafka-connect").await?;
    shale.client().create_topic("connect-lines", 1).await?;
    let ports = [free_port()?, free_port()?];
    let mut workers = [
        connect_worker(&classpath, &kafka, dir.path(), "a", ports[0])?,
        connect_worker(&classpath, &kafka, dir.path(), "b", ports[1])?,
    ];
    for port in ports {
        connect_rest(
            reqwest::Method::GET,
            &format!("http://127.0.0.1:{port}/connectors"),
            None,
            Duration::from_secs(180),
        )
        .await?;
    }
    let (input, output) = (dir.path().join("input.txt"), dir.path().join("output.txt"));
    let connectors = [
        (
            "lines-in",
            json!({"connector.class": "dev.shale.checks.Lines$Source", "tasks.max": "1",
            "file": input.to_string_lossy(), "topic": "connect-lines"}),
        ),
        (
            "lines-out",
            json!({"connector.class": "dev.shale.checks.Lines$Sink", "tasks.max": "1",
            "file": output.to_string_lossy(), "topics": "connect-lines"}),
        ),
    ];
    for (name, config) in connectors {
        let url = format!("http://127.0.0.1:{}/connectors/{name}/config", ports[0]);
        connect_rest(reqwest::Method::PUT, &url, Some(config), Duration::from_secs(60)).await?;
    }
    let mut lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    std::fs::write(&input, lines.join("\n") + "\n")?;
    file_holds(&output, &lines, Duration::from_secs(120)).await?;
    // the worker running the source task is killed; its tasks move to the other
    let status_url = |port: u16| format!("http://127.0.0.1:{port}/connectors/lines-in/status");
    let status =
        connect_rest(reqwest::Method::GET, &status_url(ports[0]), None, Duration::from_secs(30)).await?;
    let running_on = status["tasks"][0]["worker_id"].as_str().context("the source task's worker")?.to_owned();
    let victim = usize::from(running_on.ends_with(&format!(":{}", ports[1])));
    let survivor = ports[1 - victim];
    workers[victim].start_kill()?;
    workers[victim].wait().await?;
    lines.extend((100..200).map(|i| format!("line {i}")));
    std::fs::write(&input, lines.join("\n") + "\n")?;
    file_holds(&output, &lines, Duration::from_secs(120)).await?;
    let status =
        connect_rest(reqwest::Method::GET, &status_url(survivor), None, Duration::from_secs(30)).await?;
    let worker = status["tasks"][0]["worker_id"].as_str().unwrap_or_default();
    ensure!(
        worker.ends_with(&format!(":{survivor}")),
        "the source task runs on {worker}, not the survivor: {status}"
    );
    // Connect's own topics are compacted topics on Shale, and HTTP sees the lines
    let described = shale.client().get("/v1/topics/connect-configs").await?;
    ensure!(described.1["config"]["cleanup_policy"] == "compact", "connect-configs: {described:?}");
    let (_, fetched) = shale.client().fetch("connect-lines", 0, "offset=0&max_records=1000").await?;
    let count = fetched["records"].as_array().map_or(0, Vec::len);
    ensure!(count >= 200, "HTTP reads {count} lines from connect-lines");
    Ok(())
}
