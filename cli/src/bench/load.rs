//! Load generators: producers (closed loop or open loop at a rate) and
//! consumers (tailing or catching up), all over HTTP with the binary bodies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use shale_core::wire::{self, ProduceRecord};
use tokio::sync::Semaphore;

/// Requests an open-loop producer keeps in flight at most.
const MAX_OUTSTANDING: usize = 1024;

/// Counters and a latency histogram (microseconds), shared by tasks.
pub struct Stats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub rejected: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
        })
    }

    pub fn record_latency(&self, micros: u64) {
        let mut h = self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        h.saturating_record(micros.max(1));
    }

    pub fn histogram(&self) -> Histogram<u64> {
        self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// 1 µs to 10 min at 3 significant digits.
#[allow(clippy::expect_used)] // constant, valid bounds: this cannot fail
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Record values: random bytes with every fourth KiB zeroed (about 25%
/// compressible); the first 8 bytes carry the send time for end-to-end latency.
pub struct Payload {
    pool: Vec<u8>,
}

impl Payload {
    pub fn new() -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut pool = vec![0u8; 16 << 20];
        for (i, block) in pool.chunks_mut(1024).enumerate() {
            if i % 4 != 3 {
                rng.fill(block);
            }
        }
        Self { pool }
    }

    fn value(&self, rng: &mut impl Rng, size: usize, sent_us: u64) -> Bytes {
        let size = size.max(8).min(self.pool.len());
        let start = rng.random_range(0..=self.pool.len() - size);
        let mut v = self.pool[start..start + size].to_vec();
        v[..8].copy_from_slice(&sent_us.to_le_bytes());
        Bytes::from(v)
    }
}

/// What producers send and where.
pub struct Producer {
    pub http: reqwest::Client,
    /// Where to produce: requests take these in turn (several gateways).
    pub urls: Vec<String>,
    pub partitions: u32,
    pub record_bytes: usize,
    pub batch: usize,
    pub payload: Payload,
    pub epoch: Instant,
    /// Prebuilt bodies, reused round-robin so the load generator does not
    /// compete for CPU with the system under test. Empty when every request
    /// must carry its send time (end-to-end latency).
    pub prebuilt: Vec<Bytes>,
    pub next_body: AtomicU64,
    pub next_url: AtomicU64,
}

/// Distinct prebuilt bodies: enough that no body repeats within a segment,
/// which would let zstd compress the repeat and flatter the result.
const PREBUILT_BODIES: u32 = 256;

enum Outcome {
    Acked,
    Rejected,
    Failed,
}

impl Producer {
    /// Builds distinct bodies (spread over the partitions) to reuse.
    pub fn prebuild(&mut self) {
        let count = PREBUILT_BODIES.max(self.partitions);
        self.prebuilt = (0..count).map(|i| self.fresh_body(i % self.partitions)).collect();
    }

    /// The next request body: prebuilt ones round-robin (their partitions
    /// rotate), else a fresh one for `partition` stamped with the send time.
    fn body(&self, partition: u32) -> Bytes {
        if self.prebuilt.is_empty() {
            return self.fresh_body(partition);
        }
        let i = self.next_body.fetch_add(1, Ordering::Relaxed) as usize % self.prebuilt.len();
        self.prebuilt[i].clone()
    }

    fn fresh_body(&self, partition: u32) -> Bytes {
        let mut rng = rand::rng();
        let sent = self.epoch.elapsed().as_micros() as u64;
        let records: Vec<ProduceRecord> = (0..self.batch)
            .map(|_| ProduceRecord {
                partition: Some(partition),
                value: Some(self.payload.value(&mut rng, self.record_bytes, sent)),
                ..ProduceRecord::default()
            })
            .collect();
        wire::encode(&records)
    }

    async fn send(&self, body: Bytes) -> Outcome {
        let n = self.next_url.fetch_add(1, Ordering::Relaxed) as usize;
        let url = &self.urls[n % self.urls.len().max(1)];
        let request = self.http.post(url).header(CONTENT_TYPE, wire::CONTENT_TYPE).body(body);
        match request.send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(_) => Outcome::Acked,
                Err(_) => Outcome::Failed,
            },
            Ok(r) if r.status().as_u16() == 429 => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }

    fn count(&self, outcome: Outcome, stats: &Stats, latency: Duration) {
        match outcome {
            Outcome::Acked => {
                stats.records.fetch_add(self.batch as u64, Ordering::Relaxed);
                stats.bytes.fetch_add((self.batch * self.record_bytes) as u64, Ordering::Relaxed);
                stats.record_latency(latency.as_micros() as u64);
            }
            Outcome::Rejected => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `producers` tasks, each sending its next request when the last is answered.
    pub async fn closed_loop(self: Arc<Self>, producers: usize, until: Instant, stats: Arc<Stats>) {
        let tasks: Vec<_> = (0..producers)
            .map(|i| {
                let (me, stats) = (self.clone(), stats.clone());
                tokio::spawn(async move {
                    let mut partition = i as u32 % me.partitions;
                    while Instant::now() < until {
                        let body = me.body(partition);
                        let started = Instant::now();
                        let outcome = me.send(body).await;
                        if matches!(outcome, Outcome::Rejected) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        me.count(outcome, &stats, started.elapsed());
                        partition = (partition + 1) % me.partitions;
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Requests at fixed intended times regardless of answers. Latency is
    /// measured from the intended send time, which corrects for coordinated
    /// omission: a stall delays every request scheduled during it.
    pub async fn open_loop(self: Arc<Self>, rate_bytes: f64, until: Instant, stats: Arc<Stats>) {
        let request_bytes = (self.batch * self.record_bytes) as f64;
        let interval = Duration::from_secs_f64(request_bytes / rate_bytes.max(1.0));
        let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
        let start = tokio::time::Instant::now();
        let mut partition = 0;
        for i in 0u32.. {
            let intended = start + interval * i;
            if intended.into_std() >= until {
                break;
            }
            tokio::time::sleep_until(intended).await;
            let Ok(permit) = outstanding.clone().acquire_owned().await else { break };
            let (me, stats) = (self.clone(), stats.clone());
            let body = self.body(partition);
            partition = (partition + 1) % self.partitions;
            tokio::spawn(async move {
                let outcome = me.send(body).await;
                me.count(outcome, &stats, intended.elapsed());
                drop(permit);
            });
        }
        let _ = outstanding.acquire_many(MAX_OUTSTANDING as u32).await;
    }
}

/// Fetches one partition, binary, from `from`.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    from: u64,
    wait_ms: u64,
) -> anyhow::Result<wire::FetchBody> {
    let response = http
        .get(url)
        .query(&[
            ("offset", from.to_string()),
            ("wait_ms", wait_ms.to_string()),
            ("max_bytes", "8388608".into()),
        ])
        .header(ACCEPT, wire::CONTENT_TYPE)
        .send()
        .await?
        .error_for_status()?;
    Ok(wire::decode_fetch(response.bytes().await?)?)
}

/// Tails a partition from `from` until `until`, recording per record the time
/// from its produce call to its delivery here.
pub async fn tail(
    http: reqwest::Client,
    url: String,
    from: u64,
    until: Instant,
    epoch: Instant,
    stats: Arc<Stats>,
) {
    let mut next = from;
    while Instant::now() < until {
        let Ok(body) = fetch(&http, &url, next, 500).await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let now = epoch.elapsed().as_micros() as u64;
        for (_, r) in &body.records {
            let stamp = r.value.as_ref().and_then(|v| v.get(..8)).and_then(|b| b.try_into().ok());
            let sent = stamp.map_or(now, u64::from_le_bytes);
            stats.record_latency(now.saturating_sub(sent));
            stats.records.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(r.size() as u64, Ordering::Relaxed);
        }
        next = body.next_offset;
    }
}

/// Reads a partition from 0 to `end` as fast as possible.
pub async fn read_to(http: reqwest::Client, url: String, end: u64, stats: Arc<Stats>) -> anyhow::Result<()> {
    let mut next = 0;
    while next < end {
        let started = Instant::now();
        let body = fetch(&http, &url, next, 0).await?;
        stats.record_latency(started.elapsed().as_micros() as u64);
        stats.records.fetch_add(body.records.len() as u64, Ordering::Relaxed);
        stats.bytes.fetch_add(body.records.iter().map(|(_, r)| r.size() as u64).sum(), Ordering::Relaxed);
        anyhow::ensure!(body.next_offset > next || body.records.is_empty(), "no progress at {next}");
        if body.records.is_empty() {
            break;
        }
        next = body.next_offset;
    }
    Ok(())
}
