//! Kafka's own applications on Shale: a Kafka Streams word count on two
//! instances and a Kafka Connect cluster of two workers, each losing one to
//! SIGKILL mid-run. They run on Apache Kafka 4.4.0's jars, which the test
//! command installs (SHALE_KAFKA_JAVA_CLASSPATH); the Java side is in
//! `tests/java/` (WordCount, Lines), one JVM per instance or worker.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::json;
use shale_tests::kafka::{client, start};
use shale_tests::{Backend, Shale};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

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
