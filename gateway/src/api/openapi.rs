//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations: the router is built from the same annotated handlers
//! (`utoipa_axum::routes!`), so every served route is documented and every
//! documented route is served. Served at `GET /v1/openapi.json`, kept in
//! `docs/openapi.json` (a test fails when that copy is stale).

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, SecurityRequirement};

/// Every error: `error_code` from the one table, a message, whether the
/// request may be retried unchanged, and context fields for some codes
/// (`high_watermark`, `log_start_offset`, `limit_bytes`, `next_offset`, …).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error_code: String,
    pub message: String,
    pub retryable: bool,
}

/// Names the API and declares bearer-token authentication.
pub fn describe(mut api: OpenApi) -> OpenApi {
    api.info.title = "Shale".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "A Kafka-style log on object storage. With authentication on, every /v1 route but this document \\
         needs `Authorization: Bearer <token>`."
            .into(),
    );
    api.info.license = None;
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    api.security =
        Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new()), SecurityRequirement::default()]);
    api
}

/// The document, as served.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        super::openapi_spec().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    &DOC
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", summary = "This document (no token needed)",
    security(()),
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], document())
}
