//! Object-store construction from a URL, and the wrappers every store gets:
//! [`MeteredStore`] (requests and bytes, by kind) inside [`RetryingStore`]
//! (bounded retries with backoff and jitter), so each retry is counted.
//!
//! - `file://DIR`: a local directory; every write is fsync'd (file and parent
//!   directory) before it returns.
//! - `memory://`: in memory, for unit tests.
//! - `s3://BUCKET/PREFIX`: any S3-compatible store. Endpoint, region and
//!   credentials come from the standard `AWS_*` environment variables, or from
//!   [`S3Options`] (which win).

mod faults;
mod metrics;
mod retry;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, RetryConfig};

pub use faults::{Fault, FaultCounts, FaultSpec, FaultyStore};
pub use metrics::{MeteredStore, Op, StoreMetrics, fine_latency};
pub use retry::{RetryPolicy, RetryingStore};

/// Settings for `s3://` stores; each overrides its `AWS_*` variable.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (local stores such as Garage or MinIO).
    pub allow_http: bool,
    /// Sign request bodies (SigV4 payload hash). Off by default: hashing every
    /// segment costs CPU, TLS already protects the bytes in flight, and every
    /// chunk carries a CRC32C that readers check.
    pub sign_payload: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL {0:?}: use file://DIR, memory:// or s3://BUCKET/PREFIX")]
    UnsupportedUrl(String),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
}

/// Builds the store a URL names, wrapped with metrics and retries (and,
/// for fault tests, injected faults: retried and counted like real ones).
pub fn open(
    url: &str,
    s3: &S3Options,
    retry: RetryPolicy,
    metrics: StoreMetrics,
    faults: Option<(FaultSpec, FaultCounts)>,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let mut inner = open_raw(url, s3)?;
    if let Some((spec, counts)) = faults {
        inner = Arc::new(FaultyStore::new(inner, spec, counts));
    }
    let metered: Arc<dyn ObjectStore> = Arc::new(MeteredStore::new(inner, metrics.clone()));
    Ok(Arc::new(RetryingStore::new(metered, retry, metrics)))
}

/// Builds the store a URL names, with no wrappers.
pub fn open_raw(url: &str, s3: &S3Options) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if url == "memory://" || url == "memory:///" {
        return Ok(Arc::new(InMemory::new()));
    }
    if let Some(dir) = url.strip_prefix("file://") {
        if dir.is_empty() {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true);
        return Ok(Arc::new(store));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // retries are ours (RetryingStore), so they are bounded and counted once
            .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(Duration::from_secs(30))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(s3.allow_http),
            );
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &s3.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &s3.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &s3.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if s3.allow_http {
            builder = builder.with_allow_http(true);
        }
        builder = builder.with_unsigned_payload(!s3.sign_payload);
        let store: Arc<dyn ObjectStore> = Arc::new(builder.build()?);
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Ok(store);
        }
        return Ok(Arc::new(PrefixStore::new(store, prefix)));
    }
    Err(StoreError::UnsupportedUrl(url.to_owned()))
}

#[cfg(test)]
mod tests;
