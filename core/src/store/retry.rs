//! Bounded retries with exponential backoff and full jitter for transient
//! object-store errors. Permanent errors (not found, precondition failed,
//! bad credentials, …) are returned at once.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
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
use rand::Rng;

use super::metrics::{Op, StoreMetrics};

/// How many times to try a request and how long to wait between tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries, the first included; at least 1.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, base_delay: Duration::from_millis(50), max_delay: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform delay in `[0, min(max, base * 2^attempt))`.
    fn delay(&self, attempt: u32) -> Duration {
        let cap = self.base_delay.saturating_mul(1 << attempt.min(16)).min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::rng().random_range(0..millis))
    }
}

/// Whether an error may go away on its own.
pub fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Generic { .. } | Error::JoinError { .. })
}

/// Retries transient failures of the wrapped store.
#[derive(Debug)]
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    metrics: StoreMetrics,
}

impl RetryingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy, metrics: StoreMetrics) -> Self {
        Self { inner, policy, metrics }
    }

    async fn retry<T, F, Fut>(&self, op: Op, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if attempt < self.policy.max_attempts && is_transient(&e) => {
                    tracing::debug!(?op, attempt, error = %e, "object store request failed, retrying");
                    self.metrics.retried(op);
                    tokio::time::sleep(self.policy.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

impl fmt::Display for RetryingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Retrying({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RetryingStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.retry(Op::Put, || self.inner.put_opts(location, payload.clone(), opts.clone())).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    /// Reads the whole body inside the retry, so an error mid-body retries
    /// the request instead of failing the read. Shale's objects are read in
    /// ranges of a chunk (a few MiB at most), so buffering them costs little.
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.head {
            return self.retry(Op::Get, || self.inner.get_opts(location, options.clone())).await;
        }
        self.retry(Op::Get, || async {
            let result = self.inner.get_opts(location, options.clone()).await?;
            let (meta, range, attributes) =
                (result.meta.clone(), result.range.clone(), result.attributes.clone());
            let extensions = result.extensions.clone();
            let bytes = result.bytes().await?;
            let body = futures::stream::once(async move { Ok(bytes) }).boxed();
            Ok(GetResult { payload: GetResultPayload::Stream(body), meta, range, attributes, extensions })
        })
        .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.retry(Op::Get, || self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.retry(Op::List, || self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.retry(Op::Copy, || self.inner.copy_opts(from, to, options.clone())).await
    }
}
