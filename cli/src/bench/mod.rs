//! `shale bench`: throughput, latency and cost, against the store's own ceiling.
//!
//! Workloads: `store` (the raw object-store ceiling), `produce`, `e2e`,
//! `catchup`, and `all` (every one in one run, with the ratios to the
//! ceiling). Each run against Shale also reports object-store requests per GiB,
//! write amplification and the gateway's peak RSS, from its `/metrics`.

mod groups;
mod kafka;
mod load;
mod report;
mod server;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::args::{GatewayArgs, StoreArgs};
use load::{Payload, Producer, Stats};
use report::Report;
use server::{Metrics, Server};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// The object store's raw PUT and ranged-GET ceiling, no Shale in front.
    Store(StoreBench),
    /// Producers only: records/s, MB/s, ack latency.
    Produce(LoadBench),
    /// Produce at a rate while consumers tail every partition: end-to-end latency.
    E2e(LoadBench),
    /// Read a backlog from the beginning as fast as possible.
    Catchup(LoadBench),
    /// Archive a backlog: compactor throughput, bytes rewritten, requests per
    /// GiB archived, peak RSS, and catch-up from the archive against
    /// catch-up from segments (starts its own controller and gateway, then a
    /// `shale compactor` process).
    Archive(LoadBench),
    /// store, produce, e2e and catchup in one run, with ratios to the ceiling.
    All(AllBench),
    /// Consumer groups: group consume against plain fetch throughput, and
    /// how long a group takes to settle when a member joins or dies.
    Groups(groups::GroupBench),
    /// Produce over Kafka's protocol (kcat) beside HTTP binary produce.
    Kafka(kafka::KafkaBench),
}

#[derive(Debug, Clone, Args)]
pub struct StoreBench {
    #[command(flatten)]
    store: StoreArgs,
    /// Object size of each PUT (Shale's segment size).
    #[arg(long, default_value_t = 4)]
    object_mib: usize,
    /// PUTs in flight (Shale's flushes in flight).
    #[arg(long, default_value_t = 4)]
    put_concurrency: usize,
    /// Bytes per ranged GET (a chunk of a 4 MiB segment over 16 partitions).
    #[arg(long, default_value_t = 256)]
    range_kib: usize,
    /// GETs in flight (one reader per partition).
    #[arg(long, default_value_t = 16)]
    get_concurrency: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Write every figure and the configuration to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Which Shale to measure.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A running Shale; default: start `shale dev` on a temporary directory.
    #[arg(long, env = "SHALE_BENCH_URL")]
    url: Option<String>,
    /// Where a self-started `shale dev` logs (appended); default: its temporary
    /// directory, deleted afterwards.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Start `shale dev` with `--auth` and send its admin token on every
    /// request (measures the cost of authentication).
    #[arg(long)]
    auth: bool,
    /// The bearer token for a Shale at `--url` that requires one.
    #[arg(long, env = "SHALE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Start three `shale controller` and two `shale gateway` processes
    /// instead of `shale dev`; producers alternate between the gateways and
    /// `e2e` consumers read through the second.
    #[arg(long, conflicts_with = "url")]
    cluster: bool,
    /// With `--cluster`: gateways without the metadata mirror (every topic
    /// lookup and partition read asks the controller), to compare.
    #[arg(long, requires = "cluster")]
    no_metadata_mirror: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LoadBench {
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Concurrent producers (closed loop); default: enough to keep as many
    /// bytes in flight as the PUT ceiling's concurrent segment PUTs
    /// (producers × batch × record size ≥ 4 × flush bytes: 64 by default).
    #[arg(long)]
    producers: Option<usize>,
    /// Records per produce request.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Offered load in MiB/s, open loop; default: as fast as possible
    /// (`e2e` defaults to 10).
    #[arg(long)]
    rate_mib: Option<f64>,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// `catchup`: bytes to produce, then read back from the beginning.
    #[arg(long, default_value_t = 256)]
    backlog_mib: u64,
    /// The bench topic's config, as JSON (e.g. `{"retention_ms": 600000}`).
    #[arg(long, value_parser = parse_topic_config)]
    topic_config: Option<Value>,
    /// `produce` and `e2e`: run the workload this many times, each against a
    /// freshly started server, and report the spread of the runs' figures.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// `produce` and `e2e`: before measuring, produce this long as fast as
    /// the server takes it, to another topic, so the store has just taken a
    /// load at saturation.
    #[arg(long, default_value_t = 0)]
    saturate_secs: u64,
    /// Write every figure and the configuration to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Segment PUTs the store's PUT ceiling keeps in flight (`bench all`).
const CEILING_PUTS: usize = 4;

impl LoadBench {
    /// Closed-loop producers: as given, or enough that their requests hold
    /// the bytes of [`CEILING_PUTS`] segments, so that the server, not the
    /// client, limits a run "as fast as possible".
    fn producers(&self) -> usize {
        let in_flight = CEILING_PUTS * self.target.gateway.flush_bytes;
        let request = (self.batch * self.record_bytes).max(1);
        self.producers.unwrap_or_else(|| in_flight.div_ceil(request).max(1))
    }
}

fn parse_topic_config(s: &str) -> Result<Value, String> {
    match serde_json::from_str(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Args)]
pub struct AllBench {
    #[command(flatten)]
    load: LoadBench,
    #[arg(long, default_value_t = 10)]
    store_duration_secs: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (report, json) = match args.workload {
        Workload::Store(a) => (store::run(&a).await?, a.json),
        Workload::Produce(a) => (repeated(&a, "produce").await?, a.json.clone()),
        Workload::E2e(a) => (repeated(&a, "e2e").await?, a.json.clone()),
        Workload::Catchup(a) => (catchup(&a).await?, a.json.clone()),
        Workload::Archive(a) => (archive(&a).await?, a.json.clone()),
        Workload::All(a) => (all(&a).await?, a.load.json.clone()),
        Workload::Groups(a) => (groups::run(&a).await?, a.json()),
        Workload::Kafka(a) => (kafka::run(&a).await?, a.json()),
    };
    report.print();
    if let Some(path) = json {
        report.write_json(&path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A bar that shows progress and the current throughput on stderr.
pub fn progress(label: &str, duration: Duration, stats: Arc<Stats>) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(label.to_owned());
    let (started, ticker) = (Instant::now(), bar.clone());
    tokio::spawn(async move {
        while !ticker.is_finished() {
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let mib = stats.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64 / secs;
            ticker.set_position(started.elapsed().as_millis() as u64);
            ticker.set_message(format!("{mib:.1} MiB/s"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    bar
}

/// Sets up a topic and a producer against the target; `stamped` requests
/// carry their send time (for end-to-end latency), others reuse bodies.
async fn setup(
    args: &LoadBench,
    server: &Server,
    http: &reqwest::Client,
    stamped: bool,
) -> anyhow::Result<(String, Arc<Producer>)> {
    let topic = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let created = http
        .post(format!("{}/v1/topics", server.url))
        .json(&json!({"name": topic, "partitions": args.partitions, "config": args.topic_config.clone().unwrap_or(json!({}))}))
        .send()
        .await?;
    ensure!(created.status().is_success(), "creating the topic: {}", created.text().await?);
    let mut producer = Producer {
        http: http.clone(),
        urls: server.urls.iter().map(|u| format!("{u}/v1/topics/{topic}/records")).collect(),
        partitions: args.partitions,
        record_bytes: args.record_bytes,
        batch: args.batch,
        payload: Payload::new(),
        epoch: Instant::now(),
        prebuilt: Vec::new(),
        next_body: AtomicU64::new(0),
        next_url: AtomicU64::new(0),
    };
    if !stamped {
        producer.prebuild();
    }
    Ok((topic, Arc::new(producer)))
}

fn config(args: &LoadBench, server: &Server, workload: &str) -> Value {
    json!({
        "workload": workload,
        "url": server.url,
        "started_server": server.is_owned(),
        "gateways": server.urls,
        "metadata_mirror": !args.target.no_metadata_mirror,
        "auth": server.token.is_some(),
        "store": args.target.store.store,
        "gateway_flags": args.target.gateway.to_args(),
        "partitions": args.partitions,
        "record_bytes": args.record_bytes,
        "producers": args.producers(),
        "batch": args.batch,
        "rate_mib": args.rate_mib,
        "duration_secs": args.duration_secs,
        "backlog_mib": args.backlog_mib,
        "repeat": args.repeat,
        "saturate_secs": args.saturate_secs,
    })
}

/// Runs `produce` or `e2e` `--repeat` times, each against a fresh server
/// (unless `--url` names one); with several runs, reports every run's
/// latency and throughput, their spread, and the median run's figures.
async fn repeated(args: &LoadBench, workload: &str) -> anyhow::Result<Report> {
    let once = || async {
        match workload {
            "e2e" => e2e(args).await,
            _ => produce(args).await,
        }
    };
    if args.repeat <= 1 {
        return once().await;
    }
    let mut runs = Vec::new();
    for run in 1..=args.repeat {
        eprintln!("run {run} of {}", args.repeat);
        runs.push(once().await?);
    }
    let p99 = |r: &Report| r.get("ack latency p99").unwrap_or(f64::NAN);
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| p99(&runs[a]).total_cmp(&p99(&runs[b])));
    let median = order[order.len() / 2];
    let mut report = Report::new(workload, runs[median].config.clone());
    report.add("runs", runs.len() as f64, "");
    const SPREAD: [(&str, &str); 4] = [
        ("ack latency p50", "ms"),
        ("ack latency p99", "ms"),
        ("ack latency p99.9", "ms"),
        ("acked throughput", "MiB/s"),
    ];
    for (figure, unit) in SPREAD {
        let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(figure)).collect();
        values.sort_by(f64::total_cmp);
        let Some((&lowest, &highest)) = values.first().zip(values.last()) else { continue };
        report.add(&format!("{figure}: lowest run"), lowest, unit);
        report.add(&format!("{figure}: median run"), values[values.len() / 2], unit);
        report.add(&format!("{figure}: highest run"), highest, unit);
    }
    for (i, run) in runs.iter().enumerate() {
        for (figure, unit) in &SPREAD[1..] {
            if let Some(v) = run.get(figure) {
                report.add(&format!("run {}: {figure}", i + 1), v, unit);
            }
        }
    }
    report.merge(&format!("median run ({}):", median + 1), &runs[median]);
    Ok(report)
}

/// Produces as fast as the server takes it for `--saturate-secs`, to a topic
/// of its own, so the measured run meets a store that was just loaded.
async fn saturate(args: &LoadBench, server: &Server, http: &reqwest::Client) -> anyhow::Result<()> {
    if args.saturate_secs == 0 {
        return Ok(());
    }
    let (_, producer) = setup(args, server, http, false).await?;
    let stats = Stats::new();
    let duration = Duration::from_secs(args.saturate_secs);
    let bar = progress("saturate", duration, stats.clone());
    producer.closed_loop(args.producers(), Instant::now() + duration, stats.clone()).await;
    bar.finish_and_clear();
    let mib = stats.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
    eprintln!("saturated: {mib:.0} MiB in {} s", args.saturate_secs);
    Ok(())
}

/// Where produce time went: each stage's p50 and p99, the Raft log's append
/// and apply, the segment PUT itself and how often it was hedged.
fn add_stage_figures(report: &mut Report, before: &Metrics, after: &Metrics) {
    let ms = |histogram: &str, labels: &str, q: f64| {
        after.quantile_since(before, histogram, labels, q).map(|s| s * 1000.0)
    };
    for stage in shale_gateway::stages::STAGES {
        let labels = format!("stage=\"{stage}\"");
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            if let Some(v) = ms("shale_produce_stage_seconds", &labels, q) {
                report.add(&format!("stage {stage} {label}"), v, "ms");
            }
        }
    }
    for (name, histogram) in [
        ("segment PUT", "shale_segment_put_seconds"),
        ("raft append", "shale_raft_append_seconds"),
        ("raft apply", "shale_raft_apply_seconds"),
    ] {
        for (label, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
            if let Some(v) = ms(histogram, "", q) {
                report.add(&format!("{name} {label}"), v, "ms");
            }
        }
    }
    let delta = |s: &str| after.get(s) - before.get(s);
    report.add("hedged PUTs", delta("shale_hedged_puts_total"), "");
    report.add("hedges that won", delta("shale_hedge_wins_total"), "");
}

/// An HTTP client for the server, presenting its token if it needs one.
fn client(server: &Server) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &server.token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()?)
}

/// Runs producers for the configured time, open or closed loop.
async fn drive(args: &LoadBench, producer: Arc<Producer>, rate_mib: Option<f64>, stats: Arc<Stats>) {
    let until = Instant::now() + Duration::from_secs(args.duration_secs);
    match rate_mib {
        Some(rate) => producer.open_loop(rate * (1 << 20) as f64, until, stats).await,
        None => producer.closed_loop(args.producers(), until, stats).await,
    }
}

fn add_produce_figures(report: &mut Report, stats: &Stats, secs: f64) {
    let records = stats.records.load(Ordering::Relaxed) as f64;
    let bytes = stats.bytes.load(Ordering::Relaxed) as f64;
    report.add("acked records/s", records / secs, "rec/s");
    report.add("acked throughput", bytes / (1 << 20) as f64 / secs, "MiB/s");
    report.latency("ack latency", &stats.histogram());
    report.add("rejected (429) requests", stats.rejected.load(Ordering::Relaxed) as f64, "");
    report.add("failed requests", stats.errors.load(Ordering::Relaxed) as f64, "");
}

/// Object-store cost and gateway memory from two scrapes of `/metrics`.
fn add_cost_figures(report: &mut Report, before: &Metrics, after: &Metrics) {
    let delta = |s: &str| after.get(s) - before.get(s);
    let gib = (1u64 << 30) as f64;
    let produced = delta("shale_produced_bytes_total");
    let fetched = delta("shale_fetched_bytes_total");
    let puts = delta("shale_store_requests_total{op=\"Put\"}");
    let gets = delta("shale_store_requests_total{op=\"Get\"}");
    let written = delta("shale_store_written_bytes_total");
    report.add("store PUTs", puts, "");
    report.add("store GETs", gets, "");
    if produced > 0.0 {
        report.add("PUTs per GiB produced", puts / (produced / gib), "");
        report.add("write amplification", written / produced, "x");
    }
    if fetched > 0.0 {
        report.add("GETs per GiB fetched", gets / (fetched / gib), "");
    }
    report.add("gateway peak RSS", after.get("shale_process_peak_resident_bytes") / (1 << 20) as f64, "MiB");
    let cpu = delta("shale_process_cpu_seconds");
    report.add("gateway CPU", cpu, "s");
    match (produced > 0.0, fetched > 0.0) {
        (true, false) => report.add("gateway CPU per GiB produced", cpu / (produced / gib), "s"),
        (false, true) => report.add("gateway CPU per GiB fetched", cpu / (fetched / gib), "s"),
        (true, true) => {
            report.add("gateway CPU per GiB produced and fetched", cpu / ((produced + fetched) / gib), "s")
        }
        (false, false) => {}
    }
    let calls = after.sum("shale_controller_calls_total") - before.sum("shale_controller_calls_total");
    let produces = delta(
        "shale_http_requests_total{method=\"POST\",route=\"/v1/topics/{topic}/records\",status=\"200\"}",
    );
    let fetches = delta(
        "shale_http_requests_total{method=\"GET\",route=\"/v1/topics/{topic}/partitions/{partition}/records\",status=\"200\"}",
    );
    report.add("controller calls", calls, "");
    if produces + fetches > 0.0 {
        report.add("controller calls per 1000 requests", calls / (produces + fetches) * 1000.0, "");
    }
    for call in [
        "commit_segments",
        "describe_topic",
        "read_partition",
        "find_time",
        "group_heartbeat",
        "commit_offsets",
        "watch",
    ] {
        let n = delta(&format!("shale_controller_calls_total{{call=\"{call}\"}}"));
        if n > 0.0 {
            report.add(&format!("{call} calls"), n, "");
        }
    }
    report.add("produce requests", produces, "");
    report.add("fetch requests", fetches, "");
}

async fn produce(args: &LoadBench) -> anyhow::Result<Report> {
    let server = Server::connect_or_start(&args.target).await?;
    let http = client(&server)?;
    saturate(args, &server, &http).await?;
    let (_, producer) = setup(args, &server, &http, false).await?;
    let before = server.metrics(&http).await?;
    let stats = Stats::new();
    let bar = progress("produce", Duration::from_secs(args.duration_secs), stats.clone());
    let started = Instant::now();
    drive(args, producer, args.rate_mib, stats.clone()).await;
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let after = server.metrics(&http).await?;
    let mut report = Report::new("produce", config(args, &server, "produce"));
    add_produce_figures(&mut report, &stats, secs);
    add_stage_figures(&mut report, &before, &after);
    add_cost_figures(&mut report, &before, &after);
    Ok(report)
}

async fn e2e(args: &LoadBench) -> anyhow::Result<Report> {
    let rate = args.rate_mib.unwrap_or(10.0);
    let server = Server::connect_or_start(&args.target).await?;
    let http = client(&server)?;
    saturate(args, &server, &http).await?;
    let (topic, producer) = setup(args, &server, &http, true).await?;
    let before = server.metrics(&http).await?;
    let (produced, delivered) = (Stats::new(), Stats::new());
    let until = Instant::now() + Duration::from_secs(args.duration_secs) + Duration::from_secs(2);
    let consumers: Vec<_> = (0..args.partitions)
        .map(|p| {
            // through the last gateway: with a cluster, records cross gateways
            let gateway = server.urls.last().unwrap_or(&server.url);
            let url = format!("{gateway}/v1/topics/{topic}/partitions/{p}/records");
            tokio::spawn(load::tail(http.clone(), url, 0, until, producer.epoch, delivered.clone()))
        })
        .collect();
    let bar = progress("e2e", Duration::from_secs(args.duration_secs), produced.clone());
    let started = Instant::now();
    drive(args, producer, Some(rate), produced.clone()).await;
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    for c in consumers {
        c.await?;
    }
    let after = server.metrics(&http).await?;
    let mut report = Report::new("e2e", config(args, &server, "e2e"));
    add_produce_figures(&mut report, &produced, secs);
    report.add("delivered records", delivered.records.load(Ordering::Relaxed) as f64, "");
    report.latency("end-to-end latency", &delivered.histogram());
    add_stage_figures(&mut report, &before, &after);
    add_cost_figures(&mut report, &before, &after);
    Ok(report)
}

/// Produces `backlog_mib` as fast as the server takes it.
async fn backlog(args: &LoadBench, producer: Arc<Producer>) -> anyhow::Result<Arc<Stats>> {
    let produced = Stats::new();
    let bar = progress("backlog", Duration::from_secs(args.duration_secs), produced.clone());
    while produced.bytes.load(Ordering::Relaxed) < args.backlog_mib << 20 {
        // short rounds: the backlog overshoots its size by one round at most
        let until = Instant::now() + Duration::from_millis(200);
        producer.clone().closed_loop(args.producers(), until, produced.clone()).await;
        ensure!(produced.records.load(Ordering::Relaxed) > 0, "no record was acknowledged");
    }
    bar.finish_and_clear();
    Ok(produced)
}

/// The high watermark of every partition of `topic`.
async fn high_watermarks(server: &Server, http: &reqwest::Client, topic: &str) -> anyhow::Result<Vec<u64>> {
    let info: Value = http.get(format!("{}/v1/topics/{topic}", server.url)).send().await?.json().await?;
    Ok(info["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["high_watermark"].as_u64().unwrap_or(0))
        .collect())
}

/// Reads every partition from its start to its high watermark at once;
/// answers what was read and how long it took.
async fn read_back(
    args: &LoadBench,
    server: &Server,
    http: &reqwest::Client,
    topic: &str,
) -> anyhow::Result<(Arc<Stats>, f64)> {
    let ends = high_watermarks(server, http, topic).await?;
    let read = Stats::new();
    let bar = progress("catchup", Duration::from_secs(args.duration_secs), read.clone());
    let started = Instant::now();
    let readers: Vec<_> = ends
        .iter()
        .enumerate()
        .map(|(p, end)| {
            let url = format!("{}/v1/topics/{topic}/partitions/{p}/records", server.url);
            tokio::spawn(load::read_to(http.clone(), url, *end, read.clone()))
        })
        .collect();
    for r in readers {
        r.await??;
    }
    bar.finish_and_clear();
    Ok((read, started.elapsed().as_secs_f64()))
}

async fn catchup(args: &LoadBench) -> anyhow::Result<Report> {
    let mut server = Server::connect_or_start(&args.target).await?;
    let http = client(&server)?;
    let (topic, producer) = setup(args, &server, &http, false).await?;
    let produced = backlog(args, producer).await?;
    // a cold start: nothing cached, every chunk comes from the store
    server.restart().await?;
    let before = server.metrics(&http).await?;
    let (read, secs) = read_back(args, &server, &http, &topic).await?;
    let after = server.metrics(&http).await?;
    let bytes = read.bytes.load(Ordering::Relaxed);
    ensure!(bytes >= produced.bytes.load(Ordering::Relaxed), "read back less than was produced");
    let mut report = Report::new("catchup", config(args, &server, "catchup"));
    report.add("backlog", bytes as f64 / (1 << 20) as f64, "MiB");
    report.add("cold cache", if server.is_owned() { 1.0 } else { 0.0 }, "bool");
    report.add("catchup throughput", bytes as f64 / (1 << 20) as f64 / secs, "MiB/s");
    report.latency("fetch latency", &read.histogram());
    add_cost_figures(&mut report, &before, &after);
    Ok(report)
}

/// Backlog into segments (archiving held off) on a controller and a gateway
/// (or `--cluster`'s), a cold catch-up from the segments, then the whole
/// backlog archived by a `shale compactor` process started for it, as one is
/// deployed (so its peak RSS and CPU are the compactor's alone), then a cold
/// catch-up from the archive.
async fn archive(args: &LoadBench) -> anyhow::Result<Report> {
    ensure!(args.target.url.is_none(), "bench archive starts its own cluster: drop --url");
    let mut args = args.clone();
    args.topic_config = Some(json!({"archive_after_ms": 365u64 * 24 * 3600 * 1000}));
    let (controllers, gateways) = if args.target.cluster { (3, 2) } else { (1, 1) };
    let mut server = Server::start_cluster(&args.target, controllers, gateways).await?;
    let http = client(&server)?;
    let (topic, producer) = setup(&args, &server, &http, false).await?;
    let produced = backlog(&args, producer).await?;
    let produced_bytes = produced.bytes.load(Ordering::Relaxed) as f64;
    let records: u64 = high_watermarks(&server, &http, &topic).await?.iter().sum();

    server.restart().await?;
    let (from_segments, segment_secs) = read_back(&args, &server, &http, &topic).await?;

    // a process of its own: the gateway's warm cache is not the compactor's
    let extra = ["--compact-interval-ms=200".to_owned(), "--gc-grace-ms=5000".to_owned()];
    let compactor = server.start_compactor(&extra).await?;
    let scrape = || Metrics::scrape(&http, &compactor);
    // time the archiving, not the start: every partition leased first
    let leased = Instant::now();
    while scrape().await?.get("shale_compactor_leased_partitions") < f64::from(args.partitions) {
        ensure!(leased.elapsed() < Duration::from_secs(120), "the compactor never held every partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = scrape().await?;
    let patched = http
        .patch(format!("{}/v1/topics/{topic}", server.url))
        .json(&json!({"config": {"archive_after_ms": 0}}))
        .send()
        .await?;
    ensure!(patched.status().is_success(), "archiving the topic: {}", patched.text().await?);
    let started = Instant::now();
    let archived = loop {
        let now = scrape().await?;
        if now.get("shale_compactor_archived_records_total") >= records as f64 {
            break now;
        }
        ensure!(started.elapsed() < Duration::from_secs(3600), "the backlog was not archived within an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let archive_secs = started.elapsed().as_secs_f64();

    server.restart().await?;
    let (from_archive, archive_read_secs) = read_back(&args, &server, &http, &topic).await?;

    let delta = |s: &str| archived.get(s) - before.get(s);
    let (mib, gib) = ((1u64 << 20) as f64, (1u64 << 30) as f64);
    let read = delta("shale_compactor_read_bytes_total");
    let mut report = Report::new("archive", config(&args, &server, "archive"));
    report.add("backlog", produced_bytes / mib, "MiB");
    // record bytes, as produce and catch-up count theirs; and the stored
    // (compressed) chunk bytes the compactor read
    report.add("archive throughput", produced_bytes / mib / archive_secs, "MiB/s");
    report.add("archive throughput (chunk bytes read)", read / mib / archive_secs, "MiB/s");
    report.add("archive files", delta("shale_compactor_archived_files_total"), "");
    report.add(
        "bytes rewritten per byte produced",
        delta("shale_compactor_written_bytes_total") / produced_bytes,
        "x",
    );
    report.add(
        "store PUTs per GiB archived",
        delta("shale_store_requests_total{op=\"Put\"}") / (read / gib),
        "",
    );
    report.add(
        "store GETs per GiB archived",
        delta("shale_store_requests_total{op=\"Get\"}") / (read / gib),
        "",
    );
    report.add("compactor peak RSS", archived.get("shale_process_peak_resident_bytes") / mib, "MiB");
    report.add(
        "compactor CPU seconds per GiB archived",
        delta("shale_process_cpu_seconds") / (read / gib),
        "s",
    );
    let segments_mib_s = from_segments.bytes.load(Ordering::Relaxed) as f64 / mib / segment_secs;
    let archive_mib_s = from_archive.bytes.load(Ordering::Relaxed) as f64 / mib / archive_read_secs;
    report.add("catchup from segments", segments_mib_s, "MiB/s");
    report.add("catchup from the archive", archive_mib_s, "MiB/s");
    report.add("archive / segments catchup ratio", archive_mib_s / segments_mib_s, "x");
    ensure!(
        from_archive.bytes.load(Ordering::Relaxed) == from_segments.bytes.load(Ordering::Relaxed),
        "the archive read back other bytes than the segments"
    );
    Ok(report)
}

async fn all(args: &AllBench) -> anyhow::Result<Report> {
    let load = &args.load;
    let store_args = StoreBench {
        store: load.target.store.clone(),
        object_mib: (load.target.gateway.flush_bytes >> 20).max(1),
        put_concurrency: CEILING_PUTS,
        range_kib: ((load.target.gateway.flush_bytes >> 10) / load.partitions.max(1) as usize).max(4),
        get_concurrency: load.partitions as usize,
        duration_secs: args.store_duration_secs,
        json: None,
    };
    let ceiling = store::run(&store_args).await?;
    let produced = produce(load).await?;
    let mut e2e_args = load.clone();
    e2e_args.rate_mib = Some(load.rate_mib.unwrap_or(10.0));
    let e2e_report = e2e(&e2e_args).await?;
    let caught_up = catchup(load).await?;

    let configs = json!({
        "store": ceiling.config,
        "produce": produced.config,
        "e2e": e2e_report.config,
        "catchup": caught_up.config,
    });
    let mut report = Report::new("all", configs);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => a / b,
        _ => 0.0,
    };
    report.add(
        "produce / store PUT ceiling",
        ratio(produced.get("acked throughput"), ceiling.get("put throughput")),
        "x",
    );
    report.add(
        "catchup / store GET ceiling",
        ratio(caught_up.get("catchup throughput"), ceiling.get("get throughput")),
        "x",
    );
    report.merge("store:", &ceiling);
    report.merge("produce:", &produced);
    report.merge("e2e:", &e2e_report);
    report.merge("catchup:", &caught_up);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadBench,
    }

    fn producers(args: &[&str]) -> usize {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("the flags parse");
        cli.load.producers()
    }

    #[test]
    fn closed_loop_producers_hold_as_many_bytes_as_the_ceilings_puts() {
        // 4 segments of 4 MiB over requests of 256 records of 1 KiB
        assert_eq!(producers(&[]), 64);
        assert_eq!(producers(&["--batch", "512"]), 32);
        assert_eq!(producers(&["--flush-bytes", "1048576", "--record-bytes", "100"]), 164);
        assert_eq!(producers(&["--producers", "3"]), 3);
    }
}
