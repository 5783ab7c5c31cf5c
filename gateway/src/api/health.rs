//! Liveness, readiness and Prometheus metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shale_core::ErrorCode;

use super::openapi::ErrorBody;
use super::{ApiError, AppState};

#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Liveness (no token needed)",
    responses((status = 200, body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the controller knows a leader, so writes can commit.
#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Readiness: the controller has a leader (no token needed)",
    responses((status = 200, body = Object), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    if state.controller.is_ready().await {
        Ok(Json(json!({"status": "ready"})))
    } else {
        Err(ApiError::new(ErrorCode::ControllerUnavailable, "the controller has no leader yet"))
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", summary = "Prometheus metrics (no token needed)",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}
