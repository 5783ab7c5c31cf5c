//! Extractors whose rejections answer in the API's JSON error shape.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use shale_core::ErrorCode;

use super::AppState;
use super::error::{ApiError, body_error, body_timeout};

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The raw body, limited to `max_request_bytes`.
pub struct Body(pub Bytes);

impl FromRequest<Arc<AppState>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let read = tokio::time::timeout(state.config.body_timeout, Bytes::from_request(req, state));
        read.await
            .map_err(|_| body_timeout(state.config.body_timeout))?
            .map(Body)
            .map_err(|r| body_error(r, state.config.max_request_bytes))
    }
}

/// The media type of the body, without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Parses a JSON body, insisting on `Content-Type: application/json`.
pub fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    match content_type(headers).as_deref() {
        Some("application/json") => {}
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidContentType,
                format!("expected Content-Type: application/json, got {}", other.unwrap_or("none")),
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}
