//! The gateway's Prometheus metrics, rendered in the text format at `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shale_core::store::{StoreMetrics, fine_latency};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub method: String,
    pub route: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

/// Every metric the gateway exports; cloned handles share their values.
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Mutex<Registry>,
    pub requests: Family<RouteLabels, Counter>,
    pub request_seconds: Family<RouteOnly, Histogram, fn() -> Histogram>,
    pub records_in: Counter,
    pub bytes_in: Counter,
    pub records_out: Counter,
    pub bytes_out: Counter,
    pub buffer_bytes: Gauge,
    pub segments_flushed: Counter,
    pub segment_commits: Counter,
    pub flush_seconds: Histogram,
    pub produce_stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub put_seconds: Histogram,
    pub hedged_puts: Counter,
    pub hedge_wins: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub process: ProcessGauges,
    pub open_streams: Gauge,
    pub controller_calls: Family<CallLabels, Counter>,
    pub store: StoreMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: &'static str,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let store = StoreMetrics::register(&mut registry);
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency),
            records_in: Counter::default(),
            bytes_in: Counter::default(),
            records_out: Counter::default(),
            bytes_out: Counter::default(),
            buffer_bytes: Gauge::default(),
            segments_flushed: Counter::default(),
            segment_commits: Counter::default(),
            flush_seconds: latency(),
            produce_stage_seconds: Family::new_with_constructor(fine_latency),
            put_seconds: fine_latency(),
            hedged_puts: Counter::default(),
            hedge_wins: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            process: ProcessGauges::default(),
            open_streams: Gauge::default(),
            controller_calls: Family::default(),
            store,
        };
        let r = registry.sub_registry_with_prefix("shale");
        r.register("http_requests", "HTTP requests by route and status", m.requests.clone());
        r.register("http_request_seconds", "HTTP request latency", m.request_seconds.clone());
        r.register("produced_records", "Records acknowledged to producers", m.records_in.clone());
        r.register("produced_bytes", "Record bytes acknowledged to producers", m.bytes_in.clone());
        r.register("fetched_records", "Records returned to consumers", m.records_out.clone());
        r.register("fetched_bytes", "Record bytes returned to consumers", m.bytes_out.clone());
        r.register(
            "buffer_bytes",
            "Bytes buffered or in flight, not yet acknowledged",
            m.buffer_bytes.clone(),
        );
        r.register("segments_flushed", "Segment objects written and committed", m.segments_flushed.clone());
        r.register(
            "segment_commits",
            "Controller calls that committed segments (one Raft entry each, for one or more segments)",
            m.segment_commits.clone(),
        );
        r.register("flush_seconds", "From batch seal to commit applied", m.flush_seconds.clone());
        r.register(
            "produce_stage_seconds",
            "Per produce request, time in each stage: admission, batch, encode, put, queue, commit, answer",
            m.produce_stage_seconds.clone(),
        );
        r.register(
            "segment_put_seconds",
            "Segment PUTs, the winner's time when hedged",
            m.put_seconds.clone(),
        );
        r.register(
            "hedged_puts",
            "Segment PUTs raced by a second PUT under a new key",
            m.hedged_puts.clone(),
        );
        r.register("hedge_wins", "Hedged PUTs where the second PUT finished first", m.hedge_wins.clone());
        r.register("cache_hits", "Chunk reads served from the cache", m.cache_hits.clone());
        r.register("cache_misses", "Chunk reads that needed a GET", m.cache_misses.clone());
        m.process.register(r);
        r.register("open_streams", "Server-sent event streams open", m.open_streams.clone());
        r.register(
            "controller_calls",
            "Calls this process made to the controller, by call",
            m.controller_calls.clone(),
        );
        *m.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = registry;
        m
    }

    /// The histogram of one produce stage (see [`crate::stages::STAGES`]).
    pub fn stage(&self, stage: &'static str) -> Histogram {
        self.produce_stage_seconds.get_or_create(&StageLabels { stage }).clone()
    }

    /// Registers more metrics beside the gateway's (the compactor's, when it
    /// runs in the same process).
    pub fn register(&self, add: impl FnOnce(&mut Registry)) {
        add(&mut self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.process.refresh();
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's memory and CPU, read afresh at every scrape
/// (`shale_process_{resident_bytes, peak_resident_bytes, cpu_seconds}`).
#[derive(Debug, Clone, Default)]
pub struct ProcessGauges {
    resident_bytes: Gauge,
    peak_resident_bytes: Gauge,
    cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ProcessGauges {
    /// Registers the gauges in `registry` (the `shale` prefix already applied).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_resident_bytes",
            "Resident memory of this process",
            self.resident_bytes.clone(),
        );
        registry.register(
            "process_peak_resident_bytes",
            "Peak resident memory of this process",
            self.peak_resident_bytes.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time (user and system) of this process",
            self.cpu_seconds.clone(),
        );
    }

    /// Reads the process's figures now.
    pub fn refresh(&self) {
        if let Some((rss, peak)) = read_rss() {
            self.resident_bytes.set(rss);
            self.peak_resident_bytes.set(peak);
        }
        if let Some(cpu) = cpu_seconds() {
            self.cpu_seconds.set(cpu);
        }
    }
}

/// Current and peak resident set size in bytes, from `/proc/self/status` (Linux).
fn read_rss() -> Option<(i64, i64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<i64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User plus system CPU seconds of this process, from `/proc/self/stat`
/// (Linux; clock ticks of 1/100 s, as USER_HZ is on every Linux ABI).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
