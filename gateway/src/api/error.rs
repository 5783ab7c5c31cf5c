//! The one error type of the HTTP API: every failure, including malformed
//! paths, queries and bodies, answers `{"error_code","message","retryable"}`
//! with the status from [`ErrorCode`]'s table.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use shale_controller_client::{ControllerError, MetaError};
use shale_core::ErrorCode;
use shale_core::names::InvalidTopicName;

use crate::batcher::ProduceError;
use crate::reader::ReadError;
use crate::service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields merged into the body, e.g. the high watermark.
    pub details: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
    /// Overrides the table's retryability, e.g. an unknown outcome is safe to
    /// retry when the request carried an idempotency key.
    pub retryable: Option<bool>,
    /// Answered before the body was read: the connection closes, so a
    /// client does not send its next request down a socket the server drops.
    pub close: bool,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_secs: None,
            retryable: None,
            close: false,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        self.retry_after_secs = Some(after.as_secs().max(1));
        self
    }

    /// Marks an answer given without reading the request body.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// The JSON error body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "error_code": self.code,
            "message": self.message,
            "retryable": self.retryable.unwrap_or(self.code.retryable()),
        });
        if let Value::Object(fields) = &mut body {
            fields.extend(self.details.clone());
        }
        body
    }

    pub fn body_json(&self) -> String {
        self.body().to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body())).into_response();
        if self.code == ErrorCode::Unauthenticated {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let ServiceError { code, message, details, retryable, retry_after_secs } = e;
        ApiError { code, message, details, retry_after_secs, retryable, close: false }
    }
}

/// Domain errors reach HTTP through [`ServiceError`], the one mapping.
macro_rules! through_service {
    ($($error:ty),*) => {$(
        impl From<$error> for ApiError {
            fn from(e: $error) -> Self {
                ServiceError::from(e).into()
            }
        }
    )*};
}
through_service!(InvalidTopicName, MetaError, ControllerError, ProduceError, ReadError);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::invalid(format!("bad path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::invalid(format!("bad query: {}", r.body_text()))
    }
}

/// 413 for a body over the configured limit, stating it.
pub fn request_too_large(limit: usize) -> ApiError {
    ApiError::new(ErrorCode::RequestTooLarge, format!("request body exceeds the limit of {limit} bytes"))
        .with("limit_bytes", limit)
        .closing()
}

/// 408 for a body that did not arrive in time (nothing was written).
pub fn body_timeout(limit: std::time::Duration) -> ApiError {
    ApiError::new(
        ErrorCode::RequestTimeout,
        format!("the request body did not arrive within {} ms", limit.as_millis()),
    )
    .closing()
}

/// Maps a failure to read the body; `limit` is the configured body limit.
pub fn body_error(r: BytesRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return request_too_large(limit);
    }
    ApiError::invalid(format!("cannot read body: {}", r.body_text()))
}
