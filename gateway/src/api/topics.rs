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
use super::{ApiError, AppState, require};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    #[serde(default = "one")]
    partitions: u32,
    #[serde(default)]
    config: TopicConfig,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize)]
pub struct TopicList {
    topics: Vec<TopicInfo>,
}

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
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Json<TopicList>, ApiError> {
    let mut topics = state.controller.list_topics().await?;
    topics.retain(|t| principal.allows(Operation::Describe, t.name.as_str()));
    Ok(Json(TopicList { topics }))
}

pub async fn describe(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<TopicInfo>, ApiError> {
    let name = TopicName::new(topic)?;
    require(&principal, Operation::Describe, name.as_str())?;
    Ok(Json(state.controller.describe_topic(&name).await?))
}

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
