//! Gateway settings: a plain struct, filled from flags by the CLI.

use std::time::Duration;

use shale_core::segment::Compression;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Flush a batch once it holds this many bytes.
    pub flush_bytes: usize,
    /// Flush a batch once it is this old; zero flushes every request alone.
    pub flush_interval: Duration,
    /// Most bytes buffered or in flight (not yet acknowledged); beyond it
    /// producers get 429.
    pub buffer_bytes: usize,
    /// Largest record (key + value + headers).
    pub max_record_bytes: usize,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Segments being written at once; commits still leave in flush order.
    pub max_flushes_in_flight: usize,
    pub compression: Compression,
    /// Bytes of decoded chunks kept for readers.
    pub cache_bytes: u64,
    /// Longest a fetch may wait for new records.
    pub max_wait: Duration,
    /// The lease this gateway asks the controller for; it heartbeats every
    /// third of it, and loses its partitions this long after its last one.
    pub lease: Duration,
    /// A request body must arrive in full within this once admitted.
    pub body_timeout: Duration,
    /// Server-sent event streams open at once; more get 429.
    pub max_streams: usize,
    /// Log a produce request's stage breakdown when it took this long; zero
    /// never logs.
    pub log_slow: Duration,
    /// Race a segment PUT still unanswered after this percentile of recent
    /// PUT times with a second PUT; zero never hedges.
    pub hedge_percentile: f64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            flush_bytes: 4 << 20,
            flush_interval: Duration::from_millis(50),
            buffer_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            max_request_bytes: 8 << 20,
            max_flushes_in_flight: 4,
            compression: Compression::Zstd,
            cache_bytes: 32 << 20,
            max_wait: Duration::from_secs(30),
            lease: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_streams: 1024,
            log_slow: Duration::from_secs(1),
            hedge_percentile: 95.0,
        }
    }
}

impl GatewayConfig {
    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_record_bytes > self.max_request_bytes {
            return Err("max record bytes must not exceed max request bytes".into());
        }
        if self.max_request_bytes > self.buffer_bytes {
            return Err("max request bytes must not exceed the buffer".into());
        }
        if self.buffer_bytes > u32::MAX as usize {
            return Err("buffer must be below 4 GiB".into());
        }
        if !(Duration::from_millis(500)..=Duration::from_secs(300)).contains(&self.lease) {
            return Err("the lease must be between 500 ms and 300 s".into());
        }
        if self.max_wait > Duration::from_secs(30) {
            return Err("the longest long-poll is 30 s (the idle timeout must exceed it)".into());
        }
        if self.body_timeout.is_zero() {
            return Err("the body timeout must be positive".into());
        }
        if !(0.0..100.0).contains(&self.hedge_percentile) {
            return Err("the hedging percentile must be at least 0 (off) and below 100".into());
        }
        if self.max_flushes_in_flight == 0 {
            return Err("at least one flush must be allowed in flight".into());
        }
        Ok(())
    }
}
