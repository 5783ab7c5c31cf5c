//! `shale bench groups`: consumer groups measured. A backlog is read once
//! with plain partition fetches and once by a group through the member
//! records route (both in JSON with base64 values, from a cold gateway),
//! then members join and die again and again while the time until the group
//! settles is measured.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::report::Report;
use super::server::Server;
use super::{LoadBench, add_cost_figures, backlog, client, config, high_watermarks, setup};

#[derive(Debug, Clone, Args)]
pub struct GroupBench {
    #[command(flatten)]
    load: LoadBench,
    /// Members reading the backlog, and members of the rebalance rounds.
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Rounds of one member joining, then dying.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    #[arg(long, default_value_t = 3000)]
    session_timeout_ms: u64,
}

impl GroupBench {
    pub fn json(&self) -> Option<std::path::PathBuf> {
        self.load.json.clone()
    }
}

/// Records per plain fetch or member read, and bytes per partition read.
const MAX_RECORDS: &str = "10000";
const PARTITION_BYTES: usize = 1 << 20;

pub async fn run(args: &GroupBench) -> anyhow::Result<Report> {
    let load = &args.load;
    let mut server = Server::connect_or_start(&load.target).await?;
    let http = client(&server)?;
    let (topic, producer) = setup(load, &server, &http, false).await?;
    backlog(load, producer).await?;
    let total: u64 = high_watermarks(&server, &http, &topic).await?.iter().sum();

    server.restart().await?;
    let plain_secs = plain_read(&server, &http, &topic).await?;
    server.restart().await?;
    let before = server.metrics(&http).await?;
    let group_secs = group_read(args, &server, &http, &topic, total).await?;
    let after = server.metrics(&http).await?;
    let (joins, deaths) = rebalances(args, &server, &http, &topic).await?;

    let mib = (total as usize * load.record_bytes) as f64 / (1 << 20) as f64;
    let mut report = Report::new("groups", config(load, &server, "groups"));
    report.add("backlog", mib, "MiB");
    report.add("plain fetch throughput (JSON)", mib / plain_secs, "MiB/s");
    report.add("group consume throughput (JSON)", mib / group_secs, "MiB/s");
    report.add("group / plain", plain_secs / group_secs, "x");
    report.add("members", args.members as f64, "");
    report.add("session timeout", args.session_timeout_ms as f64, "ms");
    report.latency("join: until the group settles", &joins);
    report.latency("death: until its partitions moved", &deaths);
    add_cost_figures(&mut report, &before, &after);
    Ok(report)
}

/// Reads every partition from the start to its end, concurrently.
async fn plain_read(server: &Server, http: &reqwest::Client, topic: &str) -> anyhow::Result<f64> {
    let ends = high_watermarks(server, http, topic).await?;
    let started = Instant::now();
    let readers: Vec<_> = ends
        .iter()
        .enumerate()
        .map(|(p, end)| {
            let (http, end) = (http.clone(), *end);
            let url = format!("{}/v1/topics/{topic}/partitions/{p}/records", server.url);
            tokio::spawn(async move {
                let mut next = 0u64;
                while next < end {
                    let query = [
                        ("offset", next.to_string()),
                        ("encoding", "base64".into()),
                        ("max_records", MAX_RECORDS.into()),
                        ("max_bytes", PARTITION_BYTES.to_string()),
                    ];
                    let page: Value =
                        http.get(&url).query(&query).send().await?.error_for_status()?.json().await?;
                    let after = page["next_offset"].as_u64().context("next_offset")?;
                    ensure!(after > next, "no progress at {next}");
                    next = after;
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for r in readers {
        r.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn member_url(server: &Server, i: usize, group: &str, member: &str) -> String {
    let gateway = &server.urls[i % server.urls.len()];
    format!("{gateway}/v1/groups/{group}/members/{member}")
}

async fn join(
    http: &reqwest::Client,
    url: &str,
    topic: &str,
    session_ms: u64,
    epoch: Option<u64>,
) -> anyhow::Result<Value> {
    let body = json!({"topics": [topic], "session_timeout_ms": session_ms, "member_epoch": epoch});
    Ok(http.put(url).json(&body).send().await?.error_for_status()?.json().await?)
}

/// The group reads the whole backlog: each member through the records
/// route, committing as it goes, until every record is read.
async fn group_read(
    args: &GroupBench,
    server: &Server,
    http: &reqwest::Client,
    topic: &str,
    total: u64,
) -> anyhow::Result<f64> {
    let group = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let read = Arc::new(AtomicU64::new(0));
    let mut urls = Vec::new();
    for i in 0..args.members {
        let url = member_url(server, i, &group, &format!("m{i}"));
        join(http, &url, topic, args.session_timeout_ms, None).await?;
        urls.push(url);
    }
    let per_member = (args.load.partitions as usize).div_ceil(args.members);
    let started = Instant::now();
    let members: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let (http, read) = (http.clone(), read.clone());
            tokio::spawn(async move {
                let (mut cursor, mut epoch) = (String::new(), 0u64);
                while read.load(Ordering::Relaxed) < total {
                    let query = [
                        ("cursor", cursor.clone()),
                        ("member_epoch", epoch.to_string()),
                        ("commit", "true".into()),
                        ("encoding", "base64".into()),
                        ("max_records", MAX_RECORDS.into()),
                        ("max_bytes", (per_member * PARTITION_BYTES).to_string()),
                        ("wait_ms", "100".into()),
                    ];
                    let page: Value = http
                        .get(format!("{url}/records"))
                        .query(&query)
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    let n = page["records"].as_array().map_or(0, Vec::len);
                    read.fetch_add(n as u64, Ordering::Relaxed);
                    cursor = page["cursor"].as_str().unwrap_or_default().to_owned();
                    epoch = page["member_epoch"].as_u64().unwrap_or(epoch);
                }
                http.delete(&url).send().await?;
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for m in members {
        m.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// What a heartbeating member last heard.
type Owned = Arc<Mutex<BTreeSet<u64>>>;

fn owned_of(answer: &Value) -> BTreeSet<u64> {
    answer["assignment"].as_array().into_iter().flatten().filter_map(|p| p["partition"].as_u64()).collect()
}

/// A member that heartbeats at the interval it is told until stopped.
fn heartbeating(
    http: reqwest::Client,
    url: String,
    topic: String,
    session_ms: u64,
    owned: Owned,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut epoch = None;
        while !stop.load(Ordering::Relaxed) {
            let mut pause = Duration::from_millis(100);
            if let Ok(answer) = join(&http, &url, &topic, session_ms, epoch).await {
                epoch = answer["member_epoch"].as_u64();
                *owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = owned_of(&answer);
                pause = Duration::from_millis(answer["heartbeat_interval_ms"].as_u64().unwrap_or(1000));
            }
            tokio::time::sleep(pause).await;
        }
    })
}

fn total_owned(members: &[Owned]) -> (usize, usize) {
    let sets: Vec<BTreeSet<u64>> =
        members.iter().map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()).collect();
    let union: BTreeSet<u64> = sets.iter().flatten().copied().collect();
    (sets.iter().map(BTreeSet::len).sum(), union.len())
}

/// Waits until the members own every partition once, and `also` holds.
async fn settled(members: &[Owned], partitions: usize, also: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if total_owned(members) == (partitions, partitions) && also() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the group did not settle within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Rounds of a member joining a settled group, then dying (its heartbeats
/// stop): the time until every partition is owned once again, each.
async fn rebalances(
    args: &GroupBench,
    server: &Server,
    http: &reqwest::Client,
    topic: &str,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let group = format!("rebalance-{}", ulid::Ulid::new().to_string().to_lowercase());
    let partitions = args.load.partitions as usize;
    let mut owned: Vec<Owned> = Vec::new();
    let mut tasks = Vec::new();
    let stop_all = Arc::new(AtomicBool::new(false));
    for i in 0..args.members.max(1) {
        let o = Owned::default();
        let url = member_url(server, i, &group, &format!("m{i}"));
        tasks.push(heartbeating(
            http.clone(),
            url,
            topic.to_owned(),
            args.session_timeout_ms,
            o.clone(),
            stop_all.clone(),
        ));
        owned.push(o);
    }
    settled(&owned, partitions, || true).await?;
    let (mut joins, mut deaths) = (super::load::histogram(), super::load::histogram());
    for round in 0..args.rounds {
        let newcomer = Owned::default();
        let stop = Arc::new(AtomicBool::new(false));
        let url = member_url(server, round, &group, &format!("new{round}"));
        let started = Instant::now();
        let task = heartbeating(
            http.clone(),
            url,
            topic.to_owned(),
            args.session_timeout_ms,
            newcomer.clone(),
            stop,
        );
        let mut all = owned.clone();
        all.push(newcomer.clone());
        // with as many members as partitions already, the newcomer gets none
        let gets_some = args.members < partitions;
        let has_some =
            || !gets_some || !newcomer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty();
        settled(&all, partitions, has_some).await?;
        joins.saturating_record(started.elapsed().as_micros() as u64);
        // dies: no leave, no more heartbeats
        task.abort();
        let died = Instant::now();
        settled(&owned, partitions, || true).await?;
        deaths.saturating_record(died.elapsed().as_micros() as u64);
    }
    stop_all.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok((joins, deaths))
}
