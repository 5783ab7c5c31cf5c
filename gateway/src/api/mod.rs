//! The public HTTP API (`/v1`), health and metrics.

mod encoding;
pub mod error;
mod extract;
mod fetch;
mod groups;
mod health;
mod member;
pub(crate) mod offsets;
pub mod openapi;
pub(crate) mod produce;
mod stream;
mod tokens;
mod topics;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use object_store::ObjectStore;
use shale_controller_client::Controller;
use shale_controller_client::auth::{Operation, Principal};
use shale_core::{Clock, ErrorCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::auth::{AuthMode, Authenticator};
use crate::batcher::{Batcher, BatcherParts};
use crate::config::GatewayConfig;
use crate::metrics::{GatewayMetrics, RouteLabels, RouteOnly};
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
    sticky: AtomicU32,
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

/// The `/v1` routes behind authentication, and the open ones, each built
/// from its annotated handler so that the router and the document agree.
fn api_routes() -> (OpenApiRouter<Arc<AppState>>, OpenApiRouter<Arc<AppState>>) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(topics::create, topics::list))
        .routes(routes!(topics::describe, topics::delete, topics::update))
        .routes(routes!(produce::produce))
        .routes(routes!(produce::produce_to_partition, fetch::fetch))
        .routes(routes!(offsets::offsets))
        .routes(routes!(groups::list))
        .routes(routes!(groups::describe, groups::delete))
        .routes(routes!(groups::join, groups::leave))
        .routes(routes!(groups::commit, groups::offsets))
        .routes(routes!(groups::reset))
        .routes(routes!(member::records))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke));
    let open = OpenApiRouter::new()
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics));
    (v1, open)
}

/// The OpenAPI document of every route the gateway serves.
pub fn openapi_spec() -> utoipa::openapi::OpenApi {
    let (v1, open) = api_routes();
    let (_, mut api) = v1.split_for_parts();
    api.merge(open.split_for_parts().1);
    openapi::describe(api)
}

/// The gateway's router.
pub fn router(state: Arc<AppState>) -> Router {
    let (v1, open) = api_routes();
    let v1: Router<Arc<AppState>> =
        v1.split_for_parts().0.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    v1.merge(open.split_for_parts().0)
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
        })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(state.config.max_request_bytes))
        .with_state(state)
}

/// Puts the request's [`Principal`] in its extensions, or answers 401.
async fn authenticate(State(state): State<Arc<AppState>>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate(header).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => ApiError::new(ErrorCode::Unauthenticated, e.to_string()).into_response(),
    }
}

/// Refuses, with 403, an operation the principal's grants do not allow.
/// Checked before the topic is looked up, so a principal that may not
/// describe a topic cannot learn whether it exists.
pub fn require(principal: &Principal, operation: Operation, topic: &str) -> Result<(), ApiError> {
    if principal.allows(operation, topic) {
        return Ok(());
    }
    let op =
        serde_json::to_value(operation).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    Err(ApiError::new(ErrorCode::Forbidden, format!("{} may not {op} topic {topic}", principal.name)))
}

/// Counts and times every request by route and status.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteOnly { method: method.clone(), route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    state.metrics.requests.get_or_create(&RouteLabels { method, route, status }).inc();
    response
}

#[cfg(test)]
mod tests;
