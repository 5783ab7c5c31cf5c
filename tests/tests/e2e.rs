//! End-to-end: the real `shale` binary over HTTP, on the local disk and on a
//! real S3-compatible server.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{Producer, Routing};
use shale_core::partitioner::partition_for_key;
use shale_tests::{Backend, History, Shale, unique};

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-key-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_read_back_exactly_once() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale =
            Shale::start(dir.path(), &backend, &unique("concurrent"), &["--flush-interval-ms=10"]).await?;
        let client = shale.client();
        client.create_topic("events", 4).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let routings = [
            Routing::Keyed(keys("a", 5)),
            Routing::Keyed(keys("b", 7)),
            Routing::Keyed(keys("c", 3)),
            Routing::Unkeyed,
            Routing::Unkeyed,
            Routing::Partition(2),
        ];
        let producers: Vec<_> = routings
            .into_iter()
            .enumerate()
            .map(|(i, routing)| {
                let producer = Producer {
                    client: client.clone(),
                    topic: "events".into(),
                    name: format!("p{i}"),
                    routing,
                    requests: Some(25),
                    history: history.clone(),
                    stop: stop.clone(),
                    stop_on_error: false,
                    keep_going: false,
                };
                tokio::spawn(producer.run())
            })
            .collect();
        for p in producers {
            ensure!(p.await?? == 25, "every request was answered");
        }
        let report = history.verify(&client, "events", 4).await.with_context(|| shale.log())?;
        ensure!(
            report.acknowledged == report.stored,
            "{}: nothing but acknowledged records: {report:?}",
            backend.name()
        );
        ensure!(report.per_partition.iter().all(|n| *n > 0), "every partition got records: {report:?}");
        for ack in history.acks() {
            if let Some(key) = &ack.key {
                ensure!(
                    ack.partition == partition_for_key(key.as_bytes(), 4),
                    "key {key} went to partition {}, Kafka's partitioner says {}",
                    ack.partition,
                    partition_for_key(key.as_bytes(), 4)
                );
            }
        }
        eprintln!("{}: {report:?}", backend.name());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_sustained_produce_loses_no_acknowledged_record() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let mut shale =
            Shale::start(dir.path(), &backend, &unique("kill9"), &["--flush-interval-ms=20"]).await?;
        let client = shale.client();
        client.create_topic("orders", 3).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let spawn = |round: &str,
                     routing: Routing,
                     i: usize,
                     requests: Option<usize>,
                     client: shale_tests::Client| {
            let producer = Producer {
                client,
                topic: "orders".into(),
                name: format!("{round}{i}"),
                routing,
                requests,
                history: history.clone(),
                stop: stop.clone(),
                stop_on_error: requests.is_none(),
                keep_going: false,
            };
            tokio::spawn(producer.run())
        };
        let producers: Vec<_> = (0..4)
            .map(|i| {
                let routing = if i % 2 == 0 { Routing::Keyed(keys("k", 6)) } else { Routing::Unkeyed };
                spawn("before", routing, i, None, client.clone())
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shale.kill9().await?;
        for p in producers {
            p.await??;
        }
        let acked_before = history.len();
        ensure!(acked_before > 0, "{}: producers got acks before the kill", backend.name());

        let shale = shale.restart().await?;
        let client = shale.client();
        let report = history.verify(&client, "orders", 3).await.with_context(|| shale.log())?;
        ensure!(report.stored >= acked_before, "{report:?}");

        // the log goes on after the restart: offsets continue, dense
        let after: Vec<_> =
            (0..2).map(|i| spawn("after", Routing::Unkeyed, i, Some(5), client.clone())).collect();
        for p in after {
            ensure!(p.await?? == 5, "produce after restart");
        }
        let report = history.verify(&client, "orders", 3).await.with_context(|| shale.log())?;
        eprintln!("{}: acked before kill {acked_before}, {report:?}", backend.name());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_a_record_produced_while_waiting() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale =
            Shale::start(dir.path(), &backend, &unique("longpoll"), &["--flush-interval-ms=5"]).await?;
        let client = shale.client();
        client.create_topic("tail", 1).await?;

        let started = Instant::now();
        let (status, body) = client.fetch("tail", 0, "offset=0&wait_ms=300").await?;
        ensure!(status == 200 && body["records"].as_array().is_some_and(Vec::is_empty), "{status} {body}");
        ensure!(started.elapsed() >= Duration::from_millis(290), "an empty long-poll waits wait_ms");

        let waiter = {
            let client = client.clone();
            tokio::spawn(async move { client.fetch("tail", 0, "offset=latest&wait_ms=20000").await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let produced_at = Instant::now();
        let (status, _) = client
            .post_json("/v1/topics/tail/records", &serde_json::json!({"records": [{"value": "hello"}]}))
            .await?;
        ensure!(status == 200);
        let (status, body) = waiter.await??;
        let waited = produced_at.elapsed();
        ensure!(status == 200, "{body}");
        ensure!(body["records"][0]["value"] == "hello", "{body}");
        ensure!(body["records"][0]["offset"] == 0, "{body}");
        ensure!(
            waited < Duration::from_secs(3),
            "{}: long-poll answered {waited:?} after the produce",
            backend.name()
        );
    }
    Ok(())
}
