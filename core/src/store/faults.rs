//! A store wrapper that injects faults at configured rates, for fault tests
//! and for trying a deployment's behaviour under a bad store:
//!
//! - `error`: the request fails at once as a 5xx would (transient);
//! - `timeout=RATE:MS`: the request hangs for MS, then fails as a timeout;
//! - `slow=RATE:MS`: the request succeeds after MS;
//! - `slow-put=RATE:MS`: a PUT (only) succeeds after MS, as a store's tail does;
//! - `cut`: a GET's body stops halfway with an error;
//! - `lost-ack`: a PUT is stored, then reported as failed.
//!
//! Spec: `error=0.05,timeout=0.02:500,slow=0.05:200,cut=0.05,lost-ack=0.05,seed=7`.
//! Every injected fault is counted in `shale_store_faults_injected_total{kind}`.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, Error, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to inject, as probabilities per request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub error: f64,
    pub timeout: f64,
    pub timeout_after: Duration,
    pub slow: f64,
    pub slow_by: Duration,
    pub slow_put: f64,
    pub slow_put_by: Duration,
    pub cut: f64,
    pub lost_ack: f64,
    pub seed: u64,
}

impl FaultSpec {
    /// Parses `kind=rate[:ms],…`; see the module docs.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let mut out = FaultSpec {
            timeout_after: Duration::from_millis(500),
            slow_by: Duration::from_millis(200),
            slow_put_by: Duration::from_millis(500),
            ..Default::default()
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, value) = part.split_once('=').ok_or_else(|| format!("{part:?} is not KIND=VALUE"))?;
            if kind == "seed" {
                out.seed = value.parse().map_err(|_| format!("seed {value:?} is not a number"))?;
                continue;
            }
            let (rate, ms) = match value.split_once(':') {
                Some((r, ms)) => {
                    (r, Some(ms.parse::<u64>().map_err(|_| format!("{ms:?} is not milliseconds"))?))
                }
                None => (value, None),
            };
            let rate: f64 = rate.parse().map_err(|_| format!("{rate:?} is not a rate"))?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("rate {rate} is not between 0 and 1"));
            }
            match kind {
                "error" => out.error = rate,
                "timeout" => {
                    out.timeout = rate;
                    out.timeout_after = ms.map_or(out.timeout_after, Duration::from_millis);
                }
                "slow" => {
                    out.slow = rate;
                    out.slow_by = ms.map_or(out.slow_by, Duration::from_millis);
                }
                "slow-put" => {
                    out.slow_put = rate;
                    out.slow_put_by = ms.map_or(out.slow_put_by, Duration::from_millis);
                }
                "cut" => out.cut = rate,
                "lost-ack" => out.lost_ack = rate,
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (error, timeout, slow, slow-put, cut, lost-ack, seed)"
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Fault {
    Error,
    Timeout,
    Slow,
    SlowPut,
    Cut,
    LostAck,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub kind: Fault,
}

/// Counts of injected faults, shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct FaultCounts(Family<FaultLabels, Counter>);

impl FaultCounts {
    /// The family to register with a metrics registry.
    pub fn family(&self) -> Family<FaultLabels, Counter> {
        self.0.clone()
    }

    pub fn get(&self, kind: Fault) -> u64 {
        self.0.get_or_create(&FaultLabels { kind }).get()
    }

    fn inc(&self, kind: Fault) {
        self.0.get_or_create(&FaultLabels { kind }).inc();
    }
}

/// Injects faults into the wrapped store.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    spec: FaultSpec,
    rng: Mutex<StdRng>,
    counts: FaultCounts,
}

fn injected(what: &str) -> Error {
    Error::Generic { store: "faults", source: format!("injected fault: {what}").into() }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, spec: FaultSpec, counts: FaultCounts) -> Self {
        let rng = Mutex::new(StdRng::seed_from_u64(spec.seed));
        Self { inner, spec, rng, counts }
    }

    fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random_bool(rate)
    }

    /// The faults every request may meet before it reaches the store.
    async fn before(&self) -> Result<()> {
        if self.roll(self.spec.error) {
            self.counts.inc(Fault::Error);
            return Err(injected("503 service unavailable"));
        }
        if self.roll(self.spec.timeout) {
            self.counts.inc(Fault::Timeout);
            tokio::time::sleep(self.spec.timeout_after).await;
            return Err(injected("request timed out"));
        }
        if self.roll(self.spec.slow) {
            self.counts.inc(Fault::Slow);
            tokio::time::sleep(self.spec.slow_by).await;
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before().await?;
        if self.roll(self.spec.slow_put) {
            self.counts.inc(Fault::SlowPut);
            tokio::time::sleep(self.spec.slow_put_by).await;
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        if self.roll(self.spec.lost_ack) {
            self.counts.inc(Fault::LostAck);
            return Err(injected("the PUT was stored but its answer was lost"));
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before().await?;
        let result = self.inner.get_opts(location, options).await?;
        if !self.roll(self.spec.cut) {
            return Ok(result);
        }
        self.counts.inc(Fault::Cut);
        let meta = result.meta.clone();
        let (range, attributes, extensions) =
            (result.range.clone(), result.attributes.clone(), result.extensions.clone());
        let bytes = result.bytes().await?;
        let half = bytes.slice(..bytes.len() / 2);
        let body = futures::stream::iter([Ok(half), Err(injected("the body was cut off"))]).boxed();
        Ok(GetResult { payload: GetResultPayload::Stream(body), meta, range, attributes, extensions })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before().await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before().await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before().await?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        let spec = FaultSpec::parse(
            "error=0.1,timeout=0.02:300,slow=0.5,slow-put=0.01:400,cut=0.05,lost-ack=0.2,seed=9",
        )
        .expect("spec");
        assert_eq!((spec.slow_put, spec.slow_put_by), (0.01, Duration::from_millis(400)));
        assert_eq!(spec.error, 0.1);
        assert_eq!(spec.timeout_after, Duration::from_millis(300));
        assert_eq!(spec.slow_by, Duration::from_millis(200));
        assert_eq!((spec.cut, spec.lost_ack, spec.seed), (0.05, 0.2, 9));
        for bad in ["error", "error=2", "boom=0.1", "slow=0.1:x", "seed=x"] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_lost_ack_still_stores_and_a_cut_body_errors_mid_read() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let always = FaultSpec { lost_ack: 1.0, cut: 1.0, ..FaultSpec::default() };
        let counts = FaultCounts::default();
        let store = FaultyStore::new(inner.clone(), always, counts.clone());
        let path = Path::from("a");
        assert!(store.put(&path, Bytes::from_static(b"0123456789").into()).await.is_err());
        assert_eq!(
            inner.get(&path).await.expect("stored").bytes().await.expect("body").as_ref(),
            b"0123456789"
        );
        let started = store.get(&path).await.expect("the GET itself answers");
        assert!(started.bytes().await.is_err(), "the body is cut off");
        assert_eq!((counts.get(Fault::LostAck), counts.get(Fault::Cut)), (1, 1));
    }
}
