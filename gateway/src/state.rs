//! What every request of either protocol shares: the controller, the
//! batcher, the reader, the config and the metrics.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use object_store::ObjectStore;
use shale_controller_client::Controller;
use shale_core::Clock;

use crate::auth::{AuthMode, Authenticator};
use crate::batcher::{Batcher, BatcherParts};
use crate::config::GatewayConfig;
use crate::metrics::GatewayMetrics;
use crate::reader::{Reader, new_cache};

/// Everything the handlers share.
pub struct AppState {
    pub controller: Arc<dyn Controller>,
    pub batcher: Batcher,
    pub reader: Reader,
    pub config: GatewayConfig,
    pub metrics: Arc<GatewayMetrics>,
    pub clock: Arc<dyn Clock>,
    pub auth: Arc<Authenticator>,
    /// Places for server-sent event streams (`max_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the gateway starts shutting down: streams tell their
    /// clients to reconnect, then end.
    pub closing: tokio_util::sync::CancellationToken,
    /// Round-robin counter for records with neither key nor partition.
    pub(crate) sticky: AtomicU32,
}

impl AppState {
    /// Builds the state and starts the batcher. Call inside a Tokio runtime.
    pub fn new(
        config: GatewayConfig,
        controller: Arc<dyn Controller>,
        store: Arc<dyn ObjectStore>,
        metrics: Arc<GatewayMetrics>,
        clock: Arc<dyn Clock>,
        auth: AuthMode,
    ) -> Arc<Self> {
        let cache = new_cache(config.cache_bytes);
        let batcher = Batcher::start(
            &config,
            BatcherParts {
                store: store.clone(),
                controller: controller.clone(),
                cache: cache.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            },
        );
        let reader = Reader::new(store, controller.clone(), cache, metrics.clone());
        let auth = Authenticator::new(auth, controller.clone());
        auth.spawn_refresher();
        Arc::new(Self {
            controller,
            batcher,
            reader,
            config: config.clone(),
            metrics,
            clock,
            auth,
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
            closing: tokio_util::sync::CancellationToken::new(),
            sticky: AtomicU32::new(0),
        })
    }
}
