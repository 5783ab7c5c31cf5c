//! How keys, values and header values travel in JSON bodies: as UTF-8
//! strings (`utf8`, the default), as base64 strings (`base64`), or as JSON
//! values stored as their serialized bytes (`json`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shale_core::ErrorCode;

use super::ApiError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
    Json,
}

impl Encoding {
    /// Bytes from a JSON field sent by a producer.
    pub fn decode(self, value: &Value, what: &str) -> Result<Bytes, ApiError> {
        let bad = |why: &str| ApiError::new(ErrorCode::InvalidEncoding, format!("{what}: {why}"));
        match (self, value) {
            (Encoding::Utf8, Value::String(s)) => Ok(Bytes::from(s.clone())),
            (Encoding::Utf8, _) => Err(bad("must be a string with encoding utf8")),
            (Encoding::Base64, Value::String(s)) => {
                STANDARD.decode(s).map(Bytes::from).map_err(|e| bad(&format!("invalid base64 ({e})")))
            }
            (Encoding::Base64, _) => Err(bad("must be a base64 string with encoding base64")),
            (Encoding::Json, v) => serde_json::to_vec(v).map(Bytes::from).map_err(|e| bad(&e.to_string())),
        }
    }

    /// A JSON field for a consumer, or why the bytes cannot be shown this way.
    pub fn encode(self, bytes: &Bytes, what: impl Fn() -> String) -> Result<Value, ApiError> {
        let unrepresentable = |why: &str| {
            ApiError::new(
                ErrorCode::NotRepresentable,
                format!("{} {why}; fetch with encoding=base64", what()),
            )
        };
        match self {
            Encoding::Utf8 => std::str::from_utf8(bytes)
                .map(|s| Value::String(s.to_owned()))
                .map_err(|_| unrepresentable("is not valid UTF-8")),
            Encoding::Base64 => Ok(Value::String(STANDARD.encode(bytes))),
            Encoding::Json => serde_json::from_slice(bytes).map_err(|_| unrepresentable("is not valid JSON")),
        }
    }
}
