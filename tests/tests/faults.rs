//! Faults from the object store, with nothing lost: a single node and a
//! cluster run with `--store-faults` (5xx, timeouts, slow answers, bodies cut
//! off mid-read, PUTs stored but reported failed) while producers send keyed
//! requests and retry each, with its key, until it is acknowledged. The
//! history check then requires every acknowledged record at its offset,
//! dense offsets, and the log to hold exactly the acknowledged records (no
//! duplicates). The readers' cache is off, so every read meets the faults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::ensure;
use shale_tests::cluster::{Options, cluster};
use shale_tests::leader::LeaderProducer;
use shale_tests::{Backend, Client, History, Shale, unique};

const FAULTS: &str = "--store-faults=error=0.05,timeout=0.02:300,slow=0.1:50,cut=0.05,lost-ack=0.2,seed=11";
/// Two tries per store request, so some requests fail through to the client
/// (which retries with its idempotency key) instead of all being absorbed.
const ATTEMPTS: &str = "--store-attempts=2";
const PARTITIONS: u32 = 4;

/// Injected faults by kind, summed over the gateways' `/metrics`.
async fn fault_counts(clients: &[Client]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for c in clients {
        let text = c.http.get(format!("{}/metrics", c.url)).send().await?.text().await?;
        for line in text.lines().filter(|l| l.starts_with("shale_store_faults_injected_total{")) {
            let kind = line.split('"').nth(1).unwrap_or("?").to_owned();
            let n: u64 = line.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            *counts.entry(kind).or_default() += n;
        }
    }
    Ok(counts)
}

/// Rounds of producing before the test gives up on a fault reaching a client.
const MAX_ROUNDS: usize = 5;

/// Three keyed producers for `run_for`, again (under new names, so new keys)
/// until some request has failed through to its client and been retried, at
/// most [`MAX_ROUNDS`] times: on a slow machine a round may make too few
/// PUTs for two failed tries in a row. Returns the history and the retries.
async fn produce(clients: &[Client], run_for: Duration) -> anyhow::Result<(Arc<History>, usize)> {
    let history = Arc::new(History::default());
    let mut retries = 0;
    for round in 0..MAX_ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..3)
            .map(|i| {
                let producer = LeaderProducer {
                    gateways: clients.to_vec(),
                    topic: "orders".into(),
                    partitions: PARTITIONS,
                    first_partition: i,
                    name: format!("p{i}r{round}"),
                    history: history.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(producer.run())
            })
            .collect();
        tokio::time::sleep(run_for).await;
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            retries += p.await??.retries;
        }
        if retries > 0 {
            break;
        }
        eprintln!("round {round}: no request failed through to its client yet; producing again");
    }
    Ok((history, retries))
}

async fn check(name: &str, clients: &[Client], history: &History, retries: usize) -> anyhow::Result<()> {
    let report = history.verify(&clients[0], "orders", PARTITIONS).await?;
    ensure!(report.acknowledged > 50, "{name}: only {} records acknowledged", report.acknowledged);
    ensure!(report.stored == report.acknowledged, "{name}: exactly the acknowledged records: {report:?}");
    let counts = fault_counts(clients).await?;
    for kind in ["Error", "Cut", "LostAck"] {
        ensure!(counts.get(kind).copied().unwrap_or(0) > 0, "{name}: no {kind} fault injected: {counts:?}");
    }
    ensure!(
        retries > 0,
        "{name}: no request failed through to its client (to be retried) in {MAX_ROUNDS} rounds"
    );
    eprintln!("{name}: faults {counts:?}, {retries} client retries, {report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_store_loses_nothing_on_a_single_node() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let flags = [FAULTS, ATTEMPTS, "--cache-bytes=1", "--flush-interval-ms=5"];
        let shale = Shale::start(dir.path(), &backend, &unique("faults"), &flags).await?;
        shale.client().create_topic("orders", PARTITIONS).await?;
        let clients = vec![shale.client()];
        let (history, retries) = produce(&clients, Duration::from_secs(4)).await?;
        check(&format!("{} single node", backend.name()), &clients, &history, retries).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_store_loses_nothing_in_a_cluster() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let options = Options {
            gateways: 2,
            gateway_flags: vec![FAULTS.into(), ATTEMPTS.into(), "--cache-bytes=1".into()],
            ..Options::default()
        };
        let (_controllers, _gateways, clients) = cluster(&backend, dir.path(), &options).await?;
        clients[0].create_topic("orders", PARTITIONS).await?;
        let (history, retries) = produce(&clients, Duration::from_secs(4)).await?;
        check(&format!("{} cluster", backend.name()), &clients, &history, retries).await?;
    }
    Ok(())
}

/// One series of a `/metrics` scrape; 0 when absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// A store whose PUTs are sometimes very slow: those PUTs are raced by a
/// second PUT, the faster one is committed, every acknowledged record reads
/// back, and each request's stages are timed in `/metrics` and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_puts_are_hedged_and_every_stage_is_timed() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let flags = [
            "--store-faults=slow-put=0.1:3000,seed=5",
            "--flush-interval-ms=0",
            "--hedge-put-percentile=80",
            "--log-slow-ms=1",
        ];
        let shale = Shale::start(dir.path(), &backend, &unique("hedge"), &flags).await?;
        let client = shale.client();
        client.create_topic("orders", 1).await?;
        let requests = 120;
        let mut stalled_late = 0;
        for i in 0..requests {
            let started = std::time::Instant::now();
            let body = serde_json::json!({"records": [{"value": format!("record {i}")}]});
            let (status, answer) = client.post_json("/v1/topics/orders/records", &body).await?;
            ensure!(status == 200, "produce {i}: {status} {answer}");
            ensure!(answer["offsets"][0]["offset"] == i, "produce {i} got {answer}");
            // the hedge needs 32 PUTs seen before it starts
            if i >= 40 && started.elapsed() >= Duration::from_millis(3000) {
                stalled_late += 1;
            }
        }
        let metrics = client.http.get(format!("{}/metrics", client.url)).send().await?.text().await?;
        let (hedged, won) =
            (series(&metrics, "shale_hedged_puts_total"), series(&metrics, "shale_hedge_wins_total"));
        let slow = series(&metrics, "shale_store_faults_injected_total{kind=\"SlowPut\"}");
        let name = backend.name();
        ensure!(slow > 0.0, "{name}: no slow PUT was injected");
        ensure!(hedged > 0.0 && won > 0.0, "{name}: {hedged} hedged PUTs, {won} won");
        // only a request whose PUT and hedge were both slow may take the 3 s
        ensure!(
            f64::from(stalled_late * 2) <= slow,
            "{name}: {stalled_late} requests took 3 s, more than pairs of the {slow} slow PUTs"
        );
        for stage in ["admission", "batch", "encode", "put", "queue", "commit", "answer"] {
            let count = series(&metrics, &format!("shale_produce_stage_seconds_count{{stage=\"{stage}\"}}"));
            ensure!(count >= f64::from(requests), "{name}: stage {stage} timed {count} times");
        }
        ensure!(series(&metrics, "shale_raft_append_seconds_count") > 0.0, "{name}: Raft appends untimed");
        let mut values: Vec<String> = Vec::new();
        while values.len() < requests as usize {
            let query = format!("offset={}", values.len());
            let (status, fetched) = client.fetch("orders", 0, &query).await?;
            ensure!(status == 200, "fetch: {status} {fetched}");
            let page: Vec<String> = fetched["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["value"].as_str().map(str::to_owned))
                .collect();
            ensure!(!page.is_empty(), "{name}: nothing at offset {}", values.len());
            values.extend(page);
        }
        let expected: Vec<String> = (0..requests).map(|i| format!("record {i}")).collect();
        ensure!(values == expected, "{name}: read back {values:?}");
        let log = shale.log();
        ensure!(
            log.contains("slow produce") && log.contains("put_ms") && log.contains("commit_ms"),
            "{name}: no stage breakdown logged"
        );
    }
    Ok(())
}
