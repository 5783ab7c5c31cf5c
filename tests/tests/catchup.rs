//! A controller that fell behind the leader's purged log catches up by
//! snapshot, whatever the size of the state: three controllers hold 100 000
//! partitions of metadata; a follower paused while the log moves on, and a
//! node added by a membership change, both catch up. Real processes.
//!
//! The subject is controller-to-controller transfer, which never touches the
//! object store, so this runs on the local disk only.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use shale_tests::cluster::{Options, cluster, cluster_http, controller_args, free_ports, leader, status};
use shale_tests::{Backend, Process};

/// 10 topics of 10 000 partitions (the most one topic may have).
const TOPICS: usize = 10;
const PARTITIONS: u32 = 10_000;
/// Snapshots every this many entries; the leader keeps 100 more behind one.
const SNAPSHOT_EVERY: u64 = 100;

/// Waits until `node` has applied at least `index`; returns how long it took.
async fn caught_up(http: &reqwest::Client, node: &Process, index: u64, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if status(http, node).await.is_some_and(|s| s.2 >= index) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn log_tail(dir: &std::path::Path, name: &str) -> String {
    let log = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_and_new_controllers_catch_up_with_100k_partitions() -> anyhow::Result<()> {
    eprintln!("local disk only: controller catch-up does not touch the object store");
    let dir = tempfile::tempdir()?;
    let options = Options { snapshot_every: SNAPSHOT_EVERY, flush_interval_ms: 0, ..Options::default() };
    let (controllers, _gateways, clients) = cluster(&Backend::Local, dir.path(), &options).await?;
    let gateway = &clients[0];
    let creating = Instant::now();
    for t in 0..TOPICS {
        gateway.create_topic(&format!("t{t}"), PARTITIONS).await?;
    }
    eprintln!("created {TOPICS} topics of {PARTITIONS} partitions in {:?}", creating.elapsed());
    let http = cluster_http();
    let leader_id = leader(&http, &controllers).await.context("no leader")?;
    let lagging = (0..3).find(|i| *i as u64 + 1 != leader_id).context("a follower")?;
    let leader_node = &controllers[(leader_id - 1) as usize];

    // pause a follower while the log moves past what the leader keeps
    controllers[lagging].signal("STOP")?;
    let start = status(&http, leader_node).await.context("leader status")?.2;
    let mut produced = 0;
    while status(&http, leader_node).await.context("leader status")?.2 < start + 4 * SNAPSHOT_EVERY {
        let body =
            json!({"records": [{"value": format!("r{produced}"), "partition": produced % PARTITIONS}]});
        let (code, answer) = gateway.post_json("/v1/topics/t0/records", &body).await?;
        ensure!(code == 200, "produce: {code} {answer}");
        produced += 1;
    }
    let target = status(&http, leader_node).await.context("leader status")?.2;
    eprintln!("{produced} produce requests while a follower was paused");
    let view: Value = http.get(format!("{}/api/status", leader_node.url)).send().await?.json().await?;
    let behind = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"].as_u64() == Some(lagging as u64 + 1))
        .and_then(|m| m["lag"].as_u64())
        .context("the leader shows the paused follower's lag")?;
    ensure!(behind >= 3 * SNAPSHOT_EVERY, "the paused follower is {behind} entries behind: {view}");

    controllers[lagging].signal("CONT")?;
    let took = caught_up(&http, &controllers[lagging], target, Duration::from_secs(120)).await;
    let name = format!("controller-{}.log", lagging + 1);
    let took = took
        .with_context(|| format!("the paused follower never caught up:\n{}", log_tail(dir.path(), &name)))?;
    let log = std::fs::read_to_string(dir.path().join(&name))?;
    ensure!(log.contains("installed snapshot"), "it caught up by snapshot, as the log was purged");
    let leader_log = std::fs::read_to_string(dir.path().join(format!("controller-{leader_id}.log")))?;
    if let Some(line) = leader_log.lines().rev().find(|l| l.contains("built snapshot")) {
        eprintln!("leader's last snapshot: {line}");
    }
    let rss = controllers[lagging].peak_rss_kib().unwrap_or(0);
    eprintln!(
        "paused follower: {behind} entries and {} partitions behind, caught up in {took:?}, peak RSS {} MiB",
        TOPICS as u32 * PARTITIONS,
        rss / 1024
    );

    // a fourth node joins by membership change and catches up the same way
    let port = free_ports(1)?[0];
    let peers: Vec<String> = controllers
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}={}", i + 1, c.url.trim_start_matches("http://")))
        .chain([format!("4=127.0.0.1:{port}")])
        .collect();
    let args = controller_args(4, port, &peers.join(","), dir.path(), SNAPSHOT_EVERY)?;
    let added = Process::start(args, dir.path().join("controller-4.log")).await?;
    let started = Instant::now();
    let change = json!({"add": {"id": 4, "addr": format!("127.0.0.1:{port}")}});
    let answer: Value =
        http.post(format!("{}/api/members", leader_node.url)).json(&change).send().await?.json().await?;
    ensure!(answer.get("Ok").is_some(), "adding node 4: {answer}");
    let target = status(&http, leader_node).await.context("leader status")?.2;
    let took = caught_up(&http, &added, target, Duration::from_secs(120)).await;
    ensure!(took.is_some(), "node 4 never caught up:\n{}", log_tail(dir.path(), "controller-4.log"));
    let rss = added.peak_rss_kib().unwrap_or(0);
    eprintln!("added node: joined and caught up in {:?}, peak RSS {} MiB", started.elapsed(), rss / 1024);
    let view: Value = http.get(format!("{}/api/status", leader_node.url)).send().await?.json().await?;
    let voter = view["members"].as_array().into_iter().flatten().any(|m| m["id"] == 4 && m["voter"] == true);
    ensure!(voter, "node 4 is a voter: {view}");
    Ok(())
}
