//! The storage conformance checks every store must pass: memory, local disk,
//! and — when `SHALE_TEST_S3_URL` is set — a real S3-compatible server.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::*;

async fn conformance(store: Arc<dyn ObjectStore>, metrics: &StoreMetrics) {
    let key = Path::from(format!("conformance/{}.seg", ulid::Ulid::new()));
    let body = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<_>>());
    store.put(&key, PutPayload::from(body.clone())).await.expect("put");
    let range = store.get_range(&key, 100..1100).await.expect("ranged get");
    assert_eq!(range, body.slice(100..1100));
    let whole = store.get(&key).await.expect("get").bytes().await.expect("body");
    assert_eq!(whole, body);
    let missing = store.get(&Path::from("conformance/missing")).await;
    assert!(matches!(missing, Err(object_store::Error::NotFound { .. })), "{missing:?}");
    store.delete(&key).await.expect("delete");
    assert!(store.head(&key).await.is_err());
    assert!(metrics.requests(metrics::Op::Put) >= 1);
    assert!(metrics.bytes_written() >= 10_000);
    assert!(metrics.bytes_read() >= 11_000);

    // a multipart upload counts its creation, each part and its completion as PUTs
    let (puts, written) = (metrics.requests(metrics::Op::Put), metrics.bytes_written());
    let parts = Path::from(format!("conformance/{}.parquet", ulid::Ulid::new()));
    let mut upload = store.put_multipart(&parts).await.expect("multipart");
    let part = Bytes::from(vec![7u8; 5 << 20]);
    upload.put_part(part.clone().into()).await.expect("part 1");
    upload.put_part(part.slice(..10).into()).await.expect("part 2");
    upload.complete().await.expect("complete");
    assert_eq!(store.head(&parts).await.expect("head").size, (5 << 20) + 10);
    assert_eq!(metrics.requests(metrics::Op::Put) - puts, 4);
    assert_eq!(metrics.bytes_written() - written, (5 << 20) + 10);
    store.delete(&parts).await.expect("delete");
}

#[tokio::test]
async fn memory_store_conforms() {
    let metrics = StoreMetrics::default();
    let store = open("memory://", &S3Options::default(), RetryPolicy::default(), metrics.clone(), None)
        .expect("memory store");
    conformance(store, &metrics).await;
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().join("nested/data").display());
    let metrics = StoreMetrics::default();
    let store = open(&url, &S3Options::default(), RetryPolicy::default(), metrics.clone(), None)
        .expect("local store");
    conformance(store, &metrics).await;
}

#[tokio::test]
async fn s3_store_conforms() {
    let Ok(url) = std::env::var("SHALE_TEST_S3_URL") else {
        eprintln!("skipped: SHALE_TEST_S3_URL is not set (scripts/test.sh sets it and starts Garage)");
        return;
    };
    let s3 = S3Options { allow_http: true, ..S3Options::default() };
    let metrics = StoreMetrics::default();
    let store = open(&format!("{url}/core-conformance"), &s3, RetryPolicy::default(), metrics.clone(), None)
        .expect("s3 store");
    conformance(store, &metrics).await;
}

#[test]
fn bad_urls_are_refused() {
    for url in ["ftp://x", "s3://", "file://", "bucket"] {
        assert!(open_raw(url, &S3Options::default()).is_err(), "{url}");
    }
}

/// A store that fails its first `failures` puts with a transient error.
#[derive(Debug)]
struct Flaky {
    inner: InMemory,
    failures: AtomicI64,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flaky")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if self.failures.fetch_sub(1, Ordering::SeqCst) > 0 {
            return Err(object_store::Error::Generic { store: "flaky", source: "injected".into() });
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    }
}

#[tokio::test]
async fn transient_failures_are_retried_and_counted() {
    let metrics = StoreMetrics::default();
    let flaky = Arc::new(Flaky { inner: InMemory::new(), failures: AtomicI64::new(2) });
    let metered: Arc<dyn ObjectStore> = Arc::new(MeteredStore::new(flaky, metrics.clone()));
    let store = RetryingStore::new(metered, fast_policy(3), metrics.clone());
    store.put(&Path::from("a"), PutPayload::from_static(b"x")).await.expect("third try succeeds");
    assert_eq!(metrics.requests(metrics::Op::Put), 3);
}

#[tokio::test]
async fn retries_are_bounded() {
    let metrics = StoreMetrics::default();
    let flaky = Arc::new(Flaky { inner: InMemory::new(), failures: AtomicI64::new(10) });
    let store = RetryingStore::new(flaky, fast_policy(3), metrics);
    assert!(store.put(&Path::from("a"), PutPayload::from_static(b"x")).await.is_err());
}

#[tokio::test]
async fn a_body_cut_mid_read_is_retried_whole() {
    use super::faults::{Fault, FaultCounts, FaultSpec, FaultyStore};
    use object_store::ObjectStoreExt;

    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    inner.put(&Path::from("seg"), PutPayload::from(data.clone())).await.expect("put");
    let counts = FaultCounts::default();
    let spec = FaultSpec { cut: 0.5, seed: 3, ..FaultSpec::default() };
    let faulty: Arc<dyn ObjectStore> = Arc::new(FaultyStore::new(inner, spec, counts.clone()));
    let store = RetryingStore::new(faulty, fast_policy(20), StoreMetrics::default());
    for i in 0..50u64 {
        let range = (i * 1000)..(i * 1000 + 4096);
        let got = store.get_range(&Path::from("seg"), range.clone()).await.expect("read despite cuts");
        assert_eq!(got.as_ref(), &data[range.start as usize..range.end as usize], "read {i}");
    }
    assert!(counts.get(Fault::Cut) > 10, "bodies were cut: {}", counts.get(Fault::Cut));
}
