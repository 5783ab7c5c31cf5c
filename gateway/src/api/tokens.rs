//! Tokens of the public API: create (the token is shown once), list, revoke.
//! All three need `admin` on `*`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shale_controller_client::auth::{Grant, Principal, TokenInfo, TokenRecord, token_hash};
use shale_core::ErrorCode;

use super::extract::{ApiPath, Body, json_body};
use super::openapi::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::new_token;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[schema(pattern = r"^[a-zA-Z0-9._-]{1,249}$")]
    name: String,
    grants: Vec<Grant>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token itself: shown here once, never again.
    token: String,
    #[serde(flatten)]
    info: TokenInfo,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenInfo>,
}

fn require_cluster_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_cluster_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("{} may not manage tokens (needs admin on *)", principal.name),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Create a token; the answer is the only time it is shown (admin on *)",
    request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 408, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    require_cluster_admin(&principal)?;
    let req: CreateToken = json_body(&headers, &body)?;
    // the controller checks the name and the grants (400 invalid_request)
    let token = new_token();
    let record = TokenRecord {
        name: req.name,
        hash: token_hash(&token),
        grants: req.grants,
        created_ms: state.clock.now_ms(),
    };
    let info = state.controller.create_token(record).await?;
    tracing::info!(token = %info.name, by = %principal.name, "token created");
    state.auth.refresh().await;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "List tokens: names and grants, never the tokens (admin on *)",
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Json<TokenList>, ApiError> {
    require_cluster_admin(&principal)?;
    let tokens = state.controller.list_tokens().await?.iter().map(TokenRecord::info).collect();
    Ok(Json(TokenList { tokens }))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    tag = "tokens",
    summary = "Revoke a token (admin on *)",
    params(("name" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_cluster_admin(&principal)?;
    state.controller.revoke_token(&name).await?;
    state.auth.forget(&name);
    tracing::info!(token = %name, by = %principal.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
