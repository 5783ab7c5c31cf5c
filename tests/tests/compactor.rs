//! The compactor as its own process (`shale compactor`) against a controller
//! and a gateway, on the local disk and on Garage: a gateway killed between
//! its PUT and its commit leaves an orphan that garbage collection deletes
//! after the grace; compactors killed in the middle of a Parquet write and
//! in the middle of a swap lose nothing, duplicate nothing, and their
//! leftovers are collected.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use object_store::ObjectStore;
use serde_json::{Value, json};
use shale_tests::archive::{list, open_flagged, open_store, python, read_archive, store_flags};
use shale_tests::cluster::{
    Options, cluster, cluster_http, controller_args, free_ports, leader, secret_flag,
};
use shale_tests::{Backend, Client, Process, unique};

/// A controller, a gateway and the bucket they share.
struct Setup {
    controller: Process,
    gateway: Process,
    store_flags: Vec<String>,
    store: Arc<dyn ObjectStore>,
}

async fn setup(backend: &Backend, dir: &Path, prefix: &str) -> anyhow::Result<Setup> {
    let port = free_ports(1)?[0];
    let store_flags = backend.store_args(prefix, &dir.join("objects"));
    let mut args = controller_args(1, port, &format!("1=127.0.0.1:{port}"), dir, 50)?;
    args.extend(store_flags.iter().cloned());
    let controller = Process::start(args, dir.join("controller.log")).await?;
    let gateway = start_gateway(&controller, dir, &store_flags).await?;
    let store = open_store(backend, dir, prefix)?;
    Ok(Setup { controller, gateway, store_flags, store })
}

async fn start_gateway(controller: &Process, dir: &Path, store_flags: &[String]) -> anyhow::Result<Process> {
    let mut args = vec![
        "gateway".into(),
        "--listen=127.0.0.1:0".into(),
        format!("--controllers={}", controller.url),
        "--flush-interval-ms=0".into(),
        secret_flag(dir)?,
    ];
    args.extend(store_flags.iter().cloned());
    let gateway = Process::start(args, dir.join("gateway.log")).await?;
    Client::new(&gateway.url).wait_ready().await?;
    Ok(gateway)
}

async fn start_compactor(
    controllers: &str,
    store_flags: Vec<String>,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Process> {
    let mut args = vec![
        "compactor".into(),
        format!("--controllers={controllers}"),
        "--compact-interval-ms=100".into(),
        "--gc-grace-ms=2000".into(),
        "--compactor-lease-ms=1500".into(),
        secret_flag(dir)?,
    ];
    args.extend(store_flags);
    args.extend(extra.iter().map(|e| (*e).to_owned()));
    Process::start(args, dir.join(format!("{name}.log"))).await
}

async fn wait_for<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    for _ in 0..300 {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what}")
}

fn log_has(dir: &Path, name: &str, text: &str) -> bool {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).is_ok_and(|l| l.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_between_put_and_commit_leaves_an_orphan_that_gc_deletes() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let options = Options { flush_interval_ms: 0, ..Options::default() };
        let (mut controllers, mut gateways, clients) = cluster(&backend, dir.path(), &options).await?;
        let c = clients[0].clone();
        c.create_topic("orders", 1).await?;
        let (st, body) =
            c.post_json("/v1/topics/orders/records", &json!({"records": [{"value": "kept"}]})).await?;
        ensure!(st == 200, "{body}");
        let flags = store_flags(gateways[0].args());
        let store = open_flagged(&backend, &flags)?;
        let committed = list(store.as_ref(), "segments").await?;
        ensure!(committed.len() == 1, "{committed:?}");

        // the leader and one follower gone: the last node still answers the
        // gateway's reads, so the next segment is PUT, but nothing commits it
        let leading = leader(&cluster_http(), &controllers).await.context("a leader")?;
        let down: Vec<usize> = (0..3)
            .filter(|i| *i as u64 + 1 == leading)
            .chain((0..3).filter(|i| *i as u64 + 1 != leading).take(1))
            .collect();
        for i in &down {
            controllers[*i].kill9().await?;
        }
        let produce = tokio::spawn({
            let c = c.clone();
            async move { c.post_json("/v1/topics/orders/records", &json!({"records": [{"value": "lost"}]})).await }
        });
        let listed = store.clone();
        wait_for("the orphan's PUT", || async { Ok(list(listed.as_ref(), "segments").await?.len() == 2) })
            .await?;
        gateways[0].kill9().await?;
        ensure!(
            !matches!(produce.await?, Ok((200, _))),
            "a record whose commit never happened was acknowledged"
        );
        for i in &down {
            controllers[*i].restart().await?;
        }
        let urls: Vec<String> = controllers.iter().map(|p| p.url.clone()).collect();
        let compactor = start_compactor(
            &urls.join(","),
            flags.clone(),
            dir.path(),
            "compactor",
            &["--metrics-listen=127.0.0.1:0"],
        )
        .await?;
        let kept = committed.clone();
        wait_for("the orphan's collection", || {
            let (store, kept) = (store.clone(), kept.clone());
            async move { Ok(list(store.as_ref(), "segments").await? == kept) }
        })
        .await
        .with_context(|| backend.name())?;
        // the standalone compactor counts what it did on its own /metrics
        let metrics = reqwest::get(&compactor.url).await?.text().await?;
        let value = |name: &str| {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
        };
        ensure!(value("shale_compactor_deleted_objects_total ") >= 1.0, "{metrics}");
        ensure!(value("shale_store_requests_total{op=\"Delete\"} ") >= 1.0, "{metrics}");
        ensure!(value("shale_process_peak_resident_bytes ") > 0.0, "{metrics}");
        gateways[0].restart().await?;
        let c = Client::new(&gateways[0].url);
        c.wait_ready().await?;
        let (st, body) = c.fetch("orders", 0, "offset=0").await?;
        ensure!(st == 200 && body["records"][0]["value"] == "kept" && body["high_watermark"] == 1, "{body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_compactors_lose_nothing_duplicate_nothing_and_leave_nothing() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("killed-compactor");
        let mut s = setup(&backend, dir.path(), &prefix).await?;
        let c = Client::new(&s.gateway.url);
        let (st, body) = c
            .post_json(
                "/v1/topics",
                &json!({"name": "orders", "partitions": 2, "config": {"archive_after_ms": 300}}),
            )
            .await?;
        ensure!(st == 201, "{body}");
        let mut acked = Vec::new();
        for i in 0..40 {
            let value = format!("v{i}");
            let (st, body) = c
                .post_json(
                    &format!("/v1/topics/orders/partitions/{}/records", i % 2),
                    &json!({"records": [{"value": value}]}),
                )
                .await?;
            ensure!(st == 200, "{body}");
            acked.push(((i % 2) as u64, body["offsets"][0]["offset"].as_u64().context("offset")?, value));
        }

        // 1: killed in the middle of a Parquet write (every store request takes 1.5 s)
        let mut slow = start_compactor(
            &s.controller.url,
            s.store_flags.clone(),
            dir.path(),
            "slow",
            &["--store-faults=slow=1.0:1500"],
        )
        .await?;
        wait_for("the slow compactor to start archiving", || async {
            Ok(log_has(dir.path(), "slow", "archiving"))
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        slow.kill9().await?;

        // 2: killed in the middle of a swap (its file written, the controller unreachable)
        tokio::time::sleep(Duration::from_millis(1600)).await; // the slow one's lease ends
        let mut swapper = start_compactor(
            &s.controller.url,
            s.store_flags.clone(),
            dir.path(),
            "swapper",
            &["--store-faults=slow=1.0:300"],
        )
        .await?;
        wait_for("the swapper to start archiving", || async {
            Ok(log_has(dir.path(), "swapper", "archiving"))
        })
        .await?;
        s.controller.kill9().await?;
        let store = s.store.clone();
        wait_for("a file written and not swapped", || async {
            Ok(!list(store.as_ref(), "archive/topic=orders").await?.is_empty())
        })
        .await?;
        swapper.kill9().await?;
        s.controller.restart().await?;

        // 3: a healthy compactor defers to the collector, then archives everything once
        let _healthy =
            start_compactor(&s.controller.url, s.store_flags.clone(), dir.path(), "healthy", &[]).await?;
        let store = s.store.clone();
        wait_for("every offset archived, every segment and leftover collected", || {
            let store = store.clone();
            async move {
                let files = list(store.as_ref(), "archive/topic=orders").await?;
                let segments = list(store.as_ref(), "segments").await?;
                Ok(segments.is_empty() && covered(&files) == Some(40))
            }
        })
        .await
        .with_context(|| {
            format!("{}: {:?}", backend.name(), std::fs::read_to_string(dir.path().join("healthy.log")))
        })?;

        ensure!(
            log_has(dir.path(), "healthy", "waiting for garbage collection"),
            "the swapper's unreferenced file was not found and waited for"
        );
        s.gateway = start_gateway(&s.controller, dir.path(), &s.store_flags).await?;
        let c = Client::new(&s.gateway.url);
        for (partition, offset, value) in &acked {
            let (st, body) =
                c.fetch("orders", *partition as u32, &format!("offset={offset}&max_records=1")).await?;
            ensure!(
                st == 200 && body["records"][0]["value"] == value.as_str(),
                "{partition}@{offset}: {body}"
            );
        }
        if let Some(python) = python() {
            let rows = read_archive(&python, "duckdb", &backend, dir.path(), &prefix, "orders").await?;
            let seen: Vec<(u64, u64, Value)> = rows
                .iter()
                .map(|r| {
                    (
                        r["partition"].as_u64().unwrap_or(9),
                        r["offset"].as_u64().unwrap_or(0),
                        r["value"].clone(),
                    )
                })
                .collect();
            ensure!(seen.len() == 40, "DuckDB sees {} rows, not 40 (duplicates or losses)", seen.len());
            for (partition, offset, value) in &acked {
                let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value);
                ensure!(
                    seen.contains(&(*partition, *offset, json!(b64))),
                    "{partition}@{offset} missing in DuckDB"
                );
            }
        }
    }
    Ok(())
}

/// How many offsets the files cover, if they tile each partition from 0
/// without overlap.
fn covered(files: &[String]) -> Option<u64> {
    let mut by_partition: std::collections::BTreeMap<&str, Vec<(u64, u64)>> = Default::default();
    for f in files {
        let (folder, name) = f.rsplit_once('/')?;
        let (first, last) = name.strip_suffix(".parquet")?.split_once('-')?;
        by_partition.entry(folder).or_default().push((first.parse().ok()?, last.parse().ok()?));
    }
    let mut total = 0;
    for ranges in by_partition.values_mut() {
        ranges.sort();
        let mut next = 0;
        for (first, last) in ranges.iter() {
            if *first != next {
                return None;
            }
            next = last + 1;
        }
        total += next;
    }
    Some(total)
}
