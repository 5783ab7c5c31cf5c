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
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use shale_controller_client::auth::{Operation, Principal};
use shale_core::ErrorCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::metrics::{RouteLabels, RouteOnly};
use crate::service::authorize;
pub use crate::state::AppState;

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
pub fn require(principal: &Principal, operation: Operation, topic: &str) -> Result<(), ApiError> {
    Ok(authorize(principal, operation, topic)?)
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
