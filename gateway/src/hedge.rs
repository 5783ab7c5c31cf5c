//! Hedged segment PUTs. A PUT still unanswered after a high percentile of
//! recent PUTs is raced by a second PUT of the same bytes under a new key;
//! the first to succeed is the segment that gets committed. The other key is
//! never referenced by the index, so if it was stored anyway the collector
//! deletes it after the grace period, like any orphan. Nothing is answered
//! before a PUT succeeded, so "ack means durable" holds either way.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use shale_core::keys::segment_key;
use ulid::Ulid;

use crate::metrics::GatewayMetrics;

/// Recent PUT times kept to compute the hedging delay.
const WINDOW: usize = 256;
/// No hedging until this many PUTs were seen.
const MIN_SAMPLES: usize = 32;
/// Never hedge sooner than this, whatever the percentile says.
const MIN_DELAY: Duration = Duration::from_millis(5);

/// When to hedge, learned from recent PUTs.
#[derive(Debug)]
pub struct Hedger {
    /// The percentile of recent PUT times after which a second PUT starts;
    /// zero turns hedging off.
    percentile: f64,
    recent: Mutex<VecDeque<Duration>>,
}

impl Hedger {
    pub fn new(percentile: f64) -> Self {
        Self { percentile, recent: Mutex::new(VecDeque::with_capacity(WINDOW)) }
    }

    fn observe(&self, took: Duration) {
        let mut recent = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(took);
    }

    /// How long a PUT may take before it is raced; `None` while hedging is
    /// off or too few PUTs were seen.
    pub fn delay(&self) -> Option<Duration> {
        if self.percentile <= 0.0 {
            return None;
        }
        let mut sorted: Vec<Duration> =
            self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        if sorted.len() < MIN_SAMPLES {
            return None;
        }
        sorted.sort_unstable();
        let rank = ((self.percentile / 100.0) * sorted.len() as f64).ceil() as usize;
        let at = sorted[rank.clamp(1, sorted.len()) - 1];
        Some(at.max(MIN_DELAY))
    }

    /// PUTs `bytes` as a new segment, hedged; answers the key that was stored
    /// and whether a second PUT was started.
    pub async fn put(
        &self,
        store: &Arc<dyn ObjectStore>,
        metrics: &GatewayMetrics,
        bytes: Bytes,
    ) -> Result<(Path, bool), object_store::Error> {
        let started = Instant::now();
        let first_key = segment_key(Ulid::new());
        let first = store.put(&first_key, PutPayload::from(bytes.clone()));
        tokio::pin!(first);
        let result = match self.delay() {
            None => first.await.map(|_| (first_key.clone(), false)),
            Some(delay) => tokio::select! {
                result = &mut first => result.map(|_| (first_key.clone(), false)),
                () = tokio::time::sleep(delay) => {
                    metrics.hedged_puts.inc();
                    let second_key = segment_key(Ulid::new());
                    let second = store.put(&second_key, PutPayload::from(bytes));
                    tokio::pin!(second);
                    // the first success wins; an error waits for the other PUT
                    tokio::select! {
                        result = &mut first => match result {
                            Ok(_) => Ok((first_key.clone(), true)),
                            Err(_) => second.await.map(|_| (second_key.clone(), true)),
                        },
                        result = &mut second => match result {
                            Ok(_) => Ok((second_key.clone(), true)),
                            Err(_) => first.await.map(|_| (first_key.clone(), true)),
                        },
                    }
                }
            },
        };
        if let Ok((key, hedged)) = &result {
            if *hedged && *key != first_key {
                metrics.hedge_wins.inc();
            }
            // the time the request waited, so hedging does not hide slow PUTs
            // from the next delay
            let took = started.elapsed();
            self.observe(took);
            metrics.put_seconds.observe(took.as_secs_f64());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};
    use shale_core::store::{FaultCounts, FaultSpec, FaultyStore};

    use super::*;

    #[test]
    fn the_delay_is_the_percentile_of_recent_puts_once_enough_were_seen() {
        let hedger = Hedger::new(95.0);
        for ms in 1..=31 {
            hedger.observe(Duration::from_millis(ms));
        }
        assert_eq!(hedger.delay(), None, "31 samples are too few");
        for ms in 32..=100 {
            hedger.observe(Duration::from_millis(ms));
        }
        assert_eq!(hedger.delay(), Some(Duration::from_millis(95)));
        assert_eq!(Hedger::new(0.0).delay(), None, "zero turns hedging off");
        let fast = Hedger::new(50.0);
        for _ in 0..40 {
            fast.observe(Duration::from_micros(100));
        }
        assert_eq!(fast.delay(), Some(MIN_DELAY), "never sooner than the floor");
    }

    #[tokio::test]
    async fn a_slow_put_is_raced_and_the_stored_key_holds_the_bytes() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let metrics = GatewayMetrics::new();
        let hedger = Hedger::new(95.0);
        for _ in 0..MIN_SAMPLES {
            hedger.observe(Duration::from_millis(1));
        }
        // every PUT is slow, so the first one is raced by a second one,
        // which is slow too: one of them is stored and answered
        let spec = FaultSpec::parse("slow-put=1:300").expect("spec");
        let slow: Arc<dyn ObjectStore> =
            Arc::new(FaultyStore::new(inner.clone(), spec, FaultCounts::default()));
        let (key, hedged) = hedger.put(&slow, &metrics, Bytes::from_static(b"segment")).await.expect("put");
        assert!(hedged);
        assert_eq!(metrics.hedged_puts.get(), 1);
        let stored = inner.get(&key).await.expect("the answered key is stored").bytes().await.expect("bytes");
        assert_eq!(&stored[..], b"segment");

        // a fast store is not hedged
        let (key, hedged) = hedger.put(&inner, &metrics, Bytes::from_static(b"fast")).await.expect("put");
        assert!(!hedged);
        assert!(inner.head(&key).await.is_ok());
        assert_eq!(metrics.hedged_puts.get(), 1);
    }

    #[tokio::test]
    async fn when_both_racing_puts_fail_the_put_fails() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        inner.put(&Path::from("warm"), PutPayload::from_static(b"x")).await.expect("put");
        let metrics = GatewayMetrics::new();
        let hedger = Hedger::new(50.0);
        for _ in 0..MIN_SAMPLES {
            hedger.observe(Duration::from_millis(1));
        }
        // every PUT hangs, then fails: the hedge starts, then both fail
        let spec = FaultSpec::parse("timeout=1:200,seed=1").expect("spec");
        let flaky = FaultyStore::new(inner.clone(), spec, FaultCounts::default());
        let store: Arc<dyn ObjectStore> = Arc::new(flaky);
        let failed = hedger.put(&store, &metrics, Bytes::from_static(b"x")).await;
        assert!(failed.is_err(), "both PUTs time out, so the PUT fails");
        assert_eq!(metrics.hedged_puts.get(), 1);
    }
}
