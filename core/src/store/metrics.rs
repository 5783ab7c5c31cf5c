//! Counts object-store requests by kind, their errors, latency and bytes moved.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::faults::FaultCounts;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Op {
    Put,
    Get,
    Delete,
    List,
    Copy,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: Op,
}

/// Object-store counters, shared by every clone.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    requests: Family<OpLabels, Counter>,
    errors: Family<OpLabels, Counter>,
    retries: Family<OpLabels, Counter>,
    latency: Family<OpLabels, Histogram, fn() -> Histogram>,
    bytes_written: Counter,
    bytes_read: Counter,
    faults: FaultCounts,
}

/// Buckets ×1.25 apart from 50 µs to about 30 s, so a p99 can be told from
/// a p90: the produce stages and the Raft log's append and apply use them.
pub fn fine_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 1.25, 60))
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            errors: Family::default(),
            retries: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            bytes_written: Counter::default(),
            bytes_read: Counter::default(),
            faults: FaultCounts::default(),
        }
    }
}

impl StoreMetrics {
    /// Requests made so far, by kind (`put` includes multipart parts, `get`
    /// heads and ranged reads): what an IAM policy must allow.
    pub fn requests_by_op(&self) -> std::collections::BTreeMap<&'static str, u64> {
        [(Op::Put, "put"), (Op::Get, "get"), (Op::Delete, "delete"), (Op::List, "list"), (Op::Copy, "copy")]
            .into_iter()
            .map(|(op, name)| (name, self.requests.get_or_create(&OpLabels { op }).get()))
            .collect()
    }

    /// New counters, registered under `shale_store_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("shale_store");
        r.register("requests", "Object-store requests by kind", m.requests.clone());
        r.register("errors", "Object-store requests that failed", m.errors.clone());
        r.register("retries", "Object-store requests retried", m.retries.clone());
        r.register("request_seconds", "Object-store request latency", m.latency.clone());
        r.register("written_bytes", "Bytes written to the object store", m.bytes_written.clone());
        r.register("read_bytes", "Bytes read from the object store", m.bytes_read.clone());
        r.register("faults_injected", "Faults injected by --store-faults, by kind", m.faults.family());
        m
    }

    /// Faults injected into this store (`--store-faults`).
    pub fn faults(&self) -> FaultCounts {
        self.faults.clone()
    }

    pub fn requests(&self, op: Op) -> u64 {
        self.requests.get_or_create(&OpLabels { op }).get()
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.get()
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.get()
    }

    pub(crate) fn retried(&self, op: Op) {
        self.retries.get_or_create(&OpLabels { op }).inc();
    }

    fn record<T>(&self, op: Op, started: Instant, result: &Result<T>) {
        let labels = OpLabels { op };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

/// Wraps a store and counts every request made through it.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    metrics: StoreMetrics,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let started = Instant::now();
        let len = payload.content_length() as u64;
        let result = self.inner.put_opts(location, payload, opts).await;
        self.metrics.record(Op::Put, started, &result);
        if result.is_ok() {
            self.metrics.bytes_written.inc_by(len);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let started = Instant::now();
        let result = self.inner.put_multipart_opts(location, opts).await;
        self.metrics.record(Op::Put, started, &result);
        let upload = result?;
        Ok(Box::new(MeteredUpload { inner: upload, metrics: self.metrics.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let started = Instant::now();
        let result = self.inner.get_opts(location, options).await;
        self.metrics.record(Op::Get, started, &result);
        if let Ok(r) = &result {
            self.metrics.bytes_read.inc_by(r.range.end - r.range.start);
        }
        result
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let started = Instant::now();
        let result = self.inner.get_ranges(location, ranges).await;
        self.metrics.record(Op::Get, started, &result);
        if let Ok(parts) = &result {
            self.metrics.bytes_read.inc_by(parts.iter().map(|b| b.len() as u64).sum());
        }
        result
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let requests = self.metrics.requests.get_or_create(&OpLabels { op: Op::Delete }).clone();
        let counted = futures::StreamExt::inspect(locations, move |_| {
            requests.inc();
        });
        self.inner.delete_stream(Box::pin(counted))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.metrics.requests.get_or_create(&OpLabels { op: Op::List }).inc();
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let started = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        self.metrics.record(Op::List, started, &result);
        result
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.copy_opts(from, to, options).await;
        self.metrics.record(Op::Copy, started, &result);
        result
    }
}

/// A multipart upload whose requests count as PUTs, as S3 bills them: the
/// creation, every part and the completion.
#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    metrics: StoreMetrics,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (len, metrics, started) = (data.content_length() as u64, self.metrics.clone(), Instant::now());
        let part = self.inner.put_part(data);
        Box::pin(async move {
            let result = part.await;
            metrics.record(Op::Put, started, &result);
            if result.is_ok() {
                metrics.bytes_written.inc_by(len);
            }
            result
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let started = Instant::now();
        let result = self.inner.complete().await;
        self.metrics.record(Op::Put, started, &result);
        result
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
