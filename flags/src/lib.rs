//! Flags shared by the server commands. Every flag also reads a `SHALE_…`
//! environment variable, so a laptop, a container and Lambda configure the
//! binary the same way.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use object_store::ObjectStore;
use shale_core::segment::Compression;
use shale_core::store::{self, FaultSpec, RetryPolicy, S3Options, StoreMetrics};
use shale_gateway::GatewayConfig;

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Object store URL: file://DIR, memory:// or s3://BUCKET/PREFIX
    /// (default: file://DATA_DIR/objects).
    #[arg(long, env = "SHALE_STORE")]
    pub store: Option<String>,
    /// S3 endpoint, e.g. http://127.0.0.1:3900 (default: AWS_ENDPOINT or AWS).
    #[arg(long, env = "SHALE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION).
    #[arg(long, env = "SHALE_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id (default: AWS_ACCESS_KEY_ID).
    #[arg(long, env = "SHALE_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (default: AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "SHALE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-HTTP S3 endpoints (local stores such as Garage or MinIO).
    #[arg(long, env = "SHALE_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// Sign S3 request bodies (SigV4 payload hash) instead of UNSIGNED-PAYLOAD.
    #[arg(long, env = "SHALE_S3_SIGN_PAYLOAD")]
    pub s3_sign_payload: bool,
    /// Tries per object-store request (the first included) before the
    /// client gets a retryable error.
    #[arg(long, env = "SHALE_STORE_ATTEMPTS", default_value_t = 5)]
    pub store_attempts: u32,
    /// For fault tests: inject store faults at these rates, e.g.
    /// error=0.05,timeout=0.02:500,slow=0.05:200,cut=0.05,lost-ack=0.05,seed=7
    #[arg(long, env = "SHALE_STORE_FAULTS")]
    pub store_faults: Option<String>,
}

impl StoreArgs {
    /// The same settings as flags, to start another `shale` with.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, value: &Option<String>| {
            if let Some(v) = value {
                out.push(format!("--{flag}={v}"));
            }
        };
        push("store", &self.store);
        push("s3-endpoint", &self.s3_endpoint);
        push("s3-region", &self.s3_region);
        push("s3-access-key-id", &self.s3_access_key_id);
        push("s3-secret-access-key", &self.s3_secret_access_key);
        push("store-faults", &self.store_faults);
        out.push(format!("--store-attempts={}", self.store_attempts));
        if self.s3_allow_http {
            out.push("--s3-allow-http".into());
        }
        if self.s3_sign_payload {
            out.push("--s3-sign-payload".into());
        }
        out
    }

    pub fn open(&self, default_url: &str, metrics: StoreMetrics) -> anyhow::Result<Arc<dyn ObjectStore>> {
        let url = self.store.as_deref().unwrap_or(default_url);
        let s3 = S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            allow_http: self.s3_allow_http,
            sign_payload: self.s3_sign_payload,
        };
        let faults = match &self.store_faults {
            Some(spec) => {
                let spec = FaultSpec::parse(spec).map_err(|e| anyhow::anyhow!("--store-faults: {e}"))?;
                tracing::warn!(?spec, "injecting object-store faults (--store-faults)");
                Some((spec, metrics.faults()))
            }
            None => None,
        };
        let retry = RetryPolicy { max_attempts: self.store_attempts.max(1), ..RetryPolicy::default() };
        Ok(store::open(url, &s3, retry, metrics, faults)?)
    }
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Flush a batch once it holds this many bytes.
    #[arg(long, env = "SHALE_FLUSH_BYTES", default_value_t = 4 << 20)]
    pub flush_bytes: usize,
    /// Flush a batch below `--flush-bytes` this many milliseconds after the
    /// previous flush, or at once if that is past (after a full segment: this
    /// long after the batch's first request). 0 = one segment per request.
    #[arg(long, env = "SHALE_FLUSH_INTERVAL_MS", default_value_t = 50)]
    pub flush_interval_ms: u64,
    /// Bytes buffered or in flight before producers get 429.
    #[arg(long, env = "SHALE_BUFFER_BYTES", default_value_t = 64 << 20)]
    pub buffer_bytes: usize,
    /// Largest record (key + value + headers) in bytes.
    #[arg(long, env = "SHALE_MAX_RECORD_BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,
    /// Largest request body in bytes.
    #[arg(long, env = "SHALE_MAX_REQUEST_BYTES", default_value_t = 8 << 20)]
    pub max_request_bytes: usize,
    /// Chunk compression: zstd or none.
    #[arg(long, env = "SHALE_COMPRESSION", default_value = "zstd")]
    pub compression: Compression,
    /// A produce body must arrive in full within this after it is admitted;
    /// a stalled upload gets 408 and its buffer space back.
    #[arg(long, env = "SHALE_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Longest a fetch may long-poll (`wait_ms` is capped to it).
    #[arg(long, env = "SHALE_MAX_WAIT_MS", default_value_t = 30_000)]
    pub max_wait_ms: u64,
    /// Bytes of decoded chunks cached for readers.
    #[arg(long, env = "SHALE_CACHE_BYTES", default_value_t = 32 << 20)]
    pub cache_bytes: u64,
    /// Gateway lease in milliseconds: this long after its last heartbeat a
    /// gateway's partitions move to others.
    #[arg(long, env = "SHALE_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: u64,
    /// Server-sent event streams open at once; more get 429.
    #[arg(long, env = "SHALE_MAX_STREAMS", default_value_t = 1024)]
    pub max_streams: usize,
    /// Log a produce request's time per stage (admission, batch, encode, put,
    /// queue, commit, answer) when it took at least this long; 0 = never.
    #[arg(long, env = "SHALE_LOG_SLOW_MS", default_value_t = 1000)]
    pub log_slow_ms: u64,
    /// Race a segment PUT still unanswered after this percentile of the last
    /// 256 PUT times with a second PUT under a new key; the first to succeed
    /// is committed. 0 = never hedge.
    #[arg(long, env = "SHALE_HEDGE_PUT_PERCENTILE", default_value_t = 95.0)]
    pub hedge_put_percentile: f64,
    /// The URL clients reach this gateway at, as shown as partition leader
    /// (default: http:// plus the address it listens on).
    #[arg(long, env = "SHALE_ADVERTISE")]
    pub advertise: Option<String>,
}

impl GatewayArgs {
    /// The same settings as flags, to start another `shale` with.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!("--flush-bytes={}", self.flush_bytes),
            format!("--flush-interval-ms={}", self.flush_interval_ms),
            format!("--buffer-bytes={}", self.buffer_bytes),
            format!("--max-record-bytes={}", self.max_record_bytes),
            format!("--max-request-bytes={}", self.max_request_bytes),
            format!("--compression={}", self.compression.as_str()),
            format!("--cache-bytes={}", self.cache_bytes),
            format!("--body-timeout-ms={}", self.body_timeout_ms),
            format!("--max-wait-ms={}", self.max_wait_ms),
            format!("--lease-ms={}", self.lease_ms),
            format!("--max-streams={}", self.max_streams),
            format!("--log-slow-ms={}", self.log_slow_ms),
            format!("--hedge-put-percentile={}", self.hedge_put_percentile),
        ]
    }

    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let config = GatewayConfig {
            flush_bytes: self.flush_bytes,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            buffer_bytes: self.buffer_bytes,
            max_record_bytes: self.max_record_bytes,
            max_request_bytes: self.max_request_bytes,
            compression: self.compression,
            cache_bytes: self.cache_bytes,
            lease: Duration::from_millis(self.lease_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_streams: self.max_streams,
            log_slow: Duration::from_millis(self.log_slow_ms),
            hedge_percentile: self.hedge_put_percentile,
            ..GatewayConfig::default()
        };
        config.validate().map_err(anyhow::Error::msg)?;
        if let Some(url) =
            self.advertise.as_ref().filter(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            anyhow::bail!("--advertise {url:?} is not an http:// or https:// URL");
        }
        Ok(config)
    }

    /// The URL to advertise for a gateway listening on `addr` with `scheme`.
    pub fn advertised_url(&self, scheme: &str, addr: std::net::SocketAddr) -> String {
        match &self.advertise {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                if addr.ip().is_unspecified() {
                    tracing::warn!(%addr, "listening on all interfaces: set --advertise to the URL clients use");
                }
                format!("{scheme}://{addr}")
            }
        }
    }
}

/// How long clients may take and how many there may be (every server).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A request head must arrive within this (also how long a keep-alive
    /// connection waits for its next request).
    #[arg(long, env = "SHALE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Close a connection that moved no byte for this long (must exceed the
    /// 30 s longest long-poll).
    #[arg(long, env = "SHALE_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Most connections open at once; more wait in the listen backlog.
    #[arg(long, env = "SHALE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, env = "SHALE_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SHALE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SHALE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ServeArgs {
    pub fn limits(&self) -> anyhow::Result<shale_gateway::serve::ServeLimits> {
        if self.idle_timeout_ms <= 30_000 {
            anyhow::bail!("--idle-timeout-ms must exceed 30000 (the longest long-poll)");
        }
        if self.header_timeout_ms == 0 || self.max_connections == 0 {
            anyhow::bail!("--header-timeout-ms and --max-connections must be positive");
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(shale_gateway::tls::acceptor(cert, key)?),
            _ => None,
        };
        Ok(shale_gateway::serve::ServeLimits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            tls,
        })
    }
}

/// How a controller node or a gateway proves it belongs to the cluster.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// File holding the cluster secret (at least 16 characters): controllers
    /// require it on every Raft RPC and controller API call; gateways present it.
    #[arg(long, env = "SHALE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Trust this CA certificate (PEM) for https:// controllers, besides the
    /// system's roots.
    #[arg(long, env = "SHALE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl ClusterArgs {
    pub fn secret(&self) -> anyhow::Result<Option<shale_controller_client::ClusterSecret>> {
        let Some(path) = &self.cluster_secret_file else { return Ok(None) };
        Ok(Some(shale_controller_client::ClusterSecret::from_file(path)?))
    }

    /// The CA certificate's PEM bytes, if one is given.
    pub fn ca_cert_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        read_ca(self.ca_cert.as_deref())
    }
}

/// Reads a CA certificate file (PEM).
pub fn read_ca(path: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(path) = path else { return Ok(None) };
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading --ca-cert {}: {e}", path.display()))?;
    Ok(Some(pem))
}

/// Whether a listener is reachable from this machine only.
pub fn is_loopback(addr: std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Who may use the public API of a gateway (or `shale dev`).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Require `Authorization: Bearer <token>` on every /v1 route. On by
    /// default on any listener but loopback.
    #[arg(long, env = "SHALE_AUTH")]
    pub auth: bool,
    /// Serve a non-loopback listener without authentication (unsafe).
    #[arg(long, env = "SHALE_INSECURE_NO_AUTH", conflicts_with = "auth")]
    pub insecure_no_auth: bool,
    /// Where the first start writes an admin token (mode 0600) when auth is
    /// on (`shale dev`: DATA_DIR/admin.token).
    #[arg(long, env = "SHALE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
}

impl AuthArgs {
    /// Auth is on when asked for, or off loopback unless explicitly waived.
    pub fn mode(&self, listen: std::net::SocketAddr) -> shale_gateway::auth::AuthMode {
        use shale_gateway::auth::AuthMode;
        if self.auth || (!is_loopback(listen) && !self.insecure_no_auth) {
            AuthMode::Tokens
        } else {
            AuthMode::Off
        }
    }

    /// Binds the public listener and says, first thing, how it is protected.
    pub async fn bind(
        &self,
        listen: &str,
    ) -> anyhow::Result<(tokio::net::TcpListener, std::net::SocketAddr, shale_gateway::auth::AuthMode)> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        self.announce(addr);
        Ok((listener, addr, self.mode(addr)))
    }

    fn announce(&self, listen: std::net::SocketAddr) {
        use shale_gateway::auth::AuthMode;
        match self.mode(listen) {
            AuthMode::Tokens => tracing::info!(%listen, "authentication is on: /v1 needs a bearer token"),
            AuthMode::Off if is_loopback(listen) => tracing::warn!(
                %listen,
                "authentication is off: listening on loopback only (pass --auth to require tokens)"
            ),
            AuthMode::Off => {
                tracing::warn!(%listen, "authentication is off (--insecure-no-auth): anyone who reaches this address may read, write and delete every topic")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use shale_gateway::auth::AuthMode;

    use super::*;

    fn auth(auth: bool, insecure_no_auth: bool) -> AuthArgs {
        AuthArgs { auth, insecure_no_auth, admin_token_file: None }
    }

    #[test]
    fn auth_is_on_off_loopback_unless_waived() {
        let loopback: std::net::SocketAddr = "127.0.0.1:7070".parse().expect("addr");
        let v6_loopback: std::net::SocketAddr = "[::1]:7070".parse().expect("addr");
        let public: std::net::SocketAddr = "0.0.0.0:7070".parse().expect("addr");
        let lan: std::net::SocketAddr = "10.1.2.3:7070".parse().expect("addr");
        assert_eq!(auth(false, false).mode(loopback), AuthMode::Off);
        assert_eq!(auth(false, false).mode(v6_loopback), AuthMode::Off);
        assert_eq!(auth(true, false).mode(loopback), AuthMode::Tokens);
        assert_eq!(auth(false, false).mode(public), AuthMode::Tokens);
        assert_eq!(auth(false, false).mode(lan), AuthMode::Tokens);
        assert_eq!(auth(false, true).mode(public), AuthMode::Off);
    }
}

/// The compactor's settings (`shale compactor`, and inside `shale dev`).
#[derive(Debug, Clone, Args)]
pub struct CompactorArgs {
    /// An object nothing references is deleted once it is this old (ms).
    #[arg(long, env = "SHALE_GC_GRACE_MS", default_value_t = shale_compactor::DEFAULT_GC_GRACE_MS)]
    pub gc_grace_ms: u64,
    /// Pause between compaction passes (ms).
    #[arg(long, env = "SHALE_COMPACT_INTERVAL_MS", default_value_t = 2000)]
    pub compact_interval_ms: u64,
    /// Small archive files are merged into files of about this many bytes.
    #[arg(long, env = "SHALE_MERGE_TARGET_BYTES", default_value_t = 256 << 20)]
    pub merge_target_bytes: u64,
    /// The compactor's partitions move this long after its last heartbeat (ms).
    #[arg(long, env = "SHALE_COMPACTOR_LEASE_MS", default_value_t = 10_000)]
    pub compactor_lease_ms: u64,
}

impl CompactorArgs {
    /// The settings, for a compactor named `id`.
    pub fn config(&self, id: String) -> anyhow::Result<shale_compactor::CompactorConfig> {
        if self.merge_target_bytes < 1 << 20 || self.merge_target_bytes > 2 << 30 {
            anyhow::bail!("--merge-target-bytes must be between 1 MiB and 2 GiB");
        }
        let window = shale_controller_client::command::MAX_COMMIT_DELAY_MS as u64;
        if self.gc_grace_ms <= window {
            tracing::warn!(
                gc_grace_ms = self.gc_grace_ms,
                commit_window_ms = window,
                "the garbage collection grace is within the commit window: a segment committed late may be deleted (tests only)"
            );
        }
        Ok(shale_compactor::CompactorConfig {
            lease_ms: self.compactor_lease_ms,
            gc_grace_ms: self.gc_grace_ms,
            interval: Duration::from_millis(self.compact_interval_ms.max(10)),
            merge_target_bytes: self.merge_target_bytes,
            ..shale_compactor::CompactorConfig::new(id)
        })
    }
}

/// A name for this compactor process, unique across restarts.
pub fn compactor_id() -> String {
    format!("compactor-{}", ulid::Ulid::new())
}
