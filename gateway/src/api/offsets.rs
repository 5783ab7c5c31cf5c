//! Offsets by time, as Kafka's ListOffsets: the first offset whose record's
//! timestamp is at or after a time, or the partition's earliest or latest.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shale_controller_client::auth::{Operation, Principal};
use shale_core::{ErrorCode, Offset, PartitionId, TopicName};

use super::extract::{ApiPath, ApiQuery};
use super::openapi::ErrorBody;
use super::produce::parse_partition;
use super::{ApiError, AppState, require};
use crate::reader::FetchRequest;

/// Records scanned per read while looking for a time inside a chunk.
const SCAN_RECORDS: usize = 10_000;

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

/// Where a time (or `earliest`/`latest`) lands in a partition.
pub enum At {
    Earliest,
    Latest,
    Time(i64),
}

impl At {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "earliest" | "-2" => Ok(At::Earliest),
            "latest" | "-1" => Ok(At::Latest),
            n => n.parse().ok().filter(|t: &i64| *t >= 0).map(At::Time).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidOffset,
                    format!(
                        "timestamp_ms must be milliseconds since the epoch, 'earliest' or 'latest', got {n:?}"
                    ),
                )
            }),
        }
    }
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

/// The offset `at` names in the partition, the timestamp of its record when
/// found by time, and the partition's log start and high watermark.
pub async fn resolve(
    state: &AppState,
    topic: &TopicName,
    partition: PartitionId,
    at: &At,
) -> Result<(Offset, Option<i64>, (Offset, Offset)), ApiError> {
    let ts = match at {
        At::Earliest | At::Latest => {
            let now =
                state.controller.read_partition(topic, partition, 0, 0, std::time::Duration::ZERO).await?;
            let bounds = (now.log_start_offset, now.high_watermark);
            let offset = if matches!(at, At::Earliest) { bounds.0 } else { bounds.1 };
            return Ok((offset, None, bounds));
        }
        At::Time(ts) => *ts,
    };
    // the first chunk whose newest record is at or after the time holds the
    // first such record: every chunk before it is older throughout
    let found = state.controller.find_time(topic, partition, ts).await?;
    let bounds = (found.log_start_offset, found.high_watermark);
    let Some(chunk) = found.chunks.first() else { return Ok((bounds.1, None, bounds)) };
    let mut from = chunk.base_offset.max(bounds.0);
    while from < chunk.end_offset() {
        let request = FetchRequest {
            topic: topic.clone(),
            partition,
            from,
            max_records: SCAN_RECORDS,
            max_bytes: 8 << 20,
            wait: std::time::Duration::ZERO,
        };
        let fetched = state.reader.fetch(&request).await?;
        if let Some((offset, r)) = fetched.records.iter().find(|(_, r)| r.timestamp_ms >= ts) {
            return Ok((*offset, Some(r.timestamp_ms), bounds));
        }
        if fetched.next_offset <= from {
            break;
        }
        from = fetched.next_offset;
    }
    // the record was compacted away: the next record after the chunk
    Ok((chunk.end_offset().min(bounds.1), None, bounds))
}
