//! Offsets by time, as Kafka's ListOffsets: the first offset whose record's
//! timestamp is at or after a time, or the partition's earliest or latest.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shale_controller_client::auth::{Operation, Principal};
use shale_core::{Offset, TopicName};

use super::extract::{ApiPath, ApiQuery};
use super::openapi::ErrorBody;
use super::produce::parse_partition;
use super::{ApiError, AppState, require};
use crate::service::offsets::{At, resolve};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OffsetsQuery {
    /// Milliseconds since the epoch, `earliest` (the log start offset) or
    /// `latest` (the high watermark).
    timestamp_ms: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OffsetAnswer {
    #[schema(value_type = u64)]
    offset: Offset,
    /// The timestamp of the record at `offset`; null for `latest`, and when
    /// no record is that recent (`offset` is then the high watermark).
    timestamp_ms: Option<i64>,
    #[schema(value_type = u64)]
    log_start_offset: Offset,
    #[schema(value_type = u64)]
    high_watermark: Offset,
}

#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/partitions/{partition}/offsets",
    tag = "records",
    summary = "The first offset at or after a time, or the earliest or latest offset",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$"), ("partition" = u32, Path), OffsetsQuery),
    responses(
        (status = 200, body = OffsetAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn offsets(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((topic, partition)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<OffsetsQuery>,
) -> Result<Json<OffsetAnswer>, ApiError> {
    let topic = TopicName::new(topic)?;
    require(&principal, Operation::Describe, topic.as_str())?;
    let partition = parse_partition(&partition)?;
    let at = At::parse(&q.timestamp_ms)?;
    let (offset, timestamp_ms, bounds) = resolve(&state, &topic, partition, &at).await?;
    Ok(Json(OffsetAnswer { offset, timestamp_ms, log_start_offset: bounds.0, high_watermark: bounds.1 }))
}
