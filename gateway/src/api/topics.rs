//! Create, list, describe and delete topics.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::{TopicConfig, TopicInfo};
use shale_core::TopicName;

use super::extract::{ApiPath, Body, json_body};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, require};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// `[a-zA-Z0-9._-]`, at most 249 characters.
    #[schema(pattern = r"^[a-zA-Z0-9._-]{1,249}$")]
    name: String,
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1, maximum = 10000)]
    partitions: u32,
    #[serde(default)]
    config: TopicConfig,
}

fn one() -> u32 {
    1
}

/// A change to a topic: config fields to set (`null` clears one) and/or a
/// larger partition count.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTopic {
    /// Merged into the topic's config (a JSON merge patch).
    #[schema(value_type = Option<Object>)]
    config: Option<serde_json::Value>,
    /// The new partition count; partitions can be added, never removed.
    #[schema(minimum = 1, maximum = 10000)]
    partitions: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopicList {
    topics: Vec<TopicInfo>,
}

#[utoipa::path(
    post,
    path = "/v1/topics",
    tag = "topics",
    summary = "Create a topic (admin)",
    request_body = CreateTopic,
    responses(
        (status = 201, body = TopicInfo),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 408, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<TopicInfo>), ApiError> {
    let req: CreateTopic = json_body(&headers, &body)?;
    let name = TopicName::new(req.name)?;
    require(&principal, Operation::Admin, name.as_str())?;
    let created = state.clock.now_ms();
    let info = state.controller.create_topic(name, req.partitions, req.config, created).await?;
    tracing::info!(topic = %info.name, partitions = info.partitions.len(), "topic created");
    Ok((StatusCode::CREATED, Json(info)))
}

/// The topics the principal may describe; others are left out.
#[utoipa::path(
    get,
    path = "/v1/topics",
    tag = "topics",
    summary = "List the topics the token may describe",
    responses((status = 200, body = TopicList), (status = 401, body = ErrorBody)),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Json<TopicList>, ApiError> {
    let mut topics = state.controller.list_topics().await?;
    topics.retain(|t| principal.allows(Operation::Describe, t.name.as_str()));
    Ok(Json(TopicList { topics }))
}

#[utoipa::path(
    get,
    path = "/v1/topics/{topic}",
    tag = "topics",
    summary = "Describe a topic: partitions, offsets, leaders",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 200, body = TopicInfo),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn describe(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    let name = TopicName::new(topic)?;
    require(&principal, Operation::Describe, name.as_str())?;
    Ok(Json(state.controller.describe_topic(&name).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/topics/{topic}",
    tag = "topics",
    summary = "Change a topic's config or add partitions (admin)",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$")),
    request_body = UpdateTopic,
    responses(
        (status = 200, body = TopicInfo),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 408, body = ErrorBody), (status = 413, body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(topic): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<TopicInfo>, ApiError> {
    let name = TopicName::new(topic)?;
    require(&principal, Operation::Admin, name.as_str())?;
    let req: UpdateTopic = json_body(&headers, &body)?;
    if req.config.is_none() && req.partitions.is_none() {
        return Err(ApiError::invalid("nothing to change: give config and/or partitions"));
    }
    let info = state.controller.update_topic(name, req.config, req.partitions).await?;
    tracing::info!(topic = %info.name, partitions = info.partitions.len(), "topic updated");
    Ok(Json(info))
}

#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}",
    tag = "topics",
    summary = "Delete a topic (admin)",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let name = TopicName::new(topic)?;
    require(&principal, Operation::Admin, name.as_str())?;
    state.controller.delete_topic(name.clone()).await?;
    tracing::info!(topic = %name, "topic deleted");
    Ok(StatusCode::NO_CONTENT)
}
