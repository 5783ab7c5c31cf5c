//! Fetch records of one partition from an offset, with long-poll.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shale_core::wire;
use shale_core::{ErrorCode, Offset, TopicName};

use super::encoding::Encoding;
use super::extract::{ApiPath, ApiQuery};
use super::openapi::ErrorBody;
use super::produce::parse_partition;
use super::{ApiError, AppState, require};
use crate::reader::FetchRequest;
use shale_controller_client::auth::{Operation, Principal};

const DEFAULT_MAX_RECORDS: usize = 1000;
const LIMIT_MAX_RECORDS: usize = 10_000;
const DEFAULT_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FetchQuery {
    /// A number, `earliest` (the default) or `latest`.
    offset: Option<String>,
    /// Most records to return (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    max_records: Option<usize>,
    /// Most bytes to return (at least one record is returned).
    max_bytes: Option<usize>,
    /// At the high watermark, wait this long for the next record (capped
    /// by the gateway's `--max-wait-ms`).
    #[param(maximum = 30000)]
    wait_ms: Option<u64>,
    /// How keys, values and header values are written.
    #[serde(default)]
    #[param(inline)]
    encoding: Encoding,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FetchedHeader {
    key: String,
    value: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FetchedRecord {
    #[schema(value_type = u64)]
    offset: Offset,
    timestamp_ms: i64,
    key: Option<Value>,
    value: Value,
    headers: Vec<FetchedHeader>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FetchResponse {
    records: Vec<FetchedRecord>,
    /// The offset to fetch next.
    #[schema(value_type = u64)]
    next_offset: Offset,
    #[schema(value_type = u64)]
    high_watermark: Offset,
    #[schema(value_type = u64)]
    log_start_offset: Offset,
}

enum Start {
    Earliest,
    Latest,
    At(Offset),
}

fn parse_offset(s: Option<&str>) -> Result<Start, ApiError> {
    match s {
        None | Some("earliest") => Ok(Start::Earliest),
        Some("latest") => Ok(Start::Latest),
        Some(n) => n.parse().map(Start::At).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidOffset,
                format!("offset must be a non-negative integer, 'earliest' or 'latest', got {n:?}"),
            )
        }),
    }
}

/// Whether the client asked for the binary fetch answer.
fn wants_binary(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with(wire::CONTENT_TYPE)))
}

#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/partitions/{partition}/records",
    tag = "records",
    summary = "Fetch records from an offset (long-poll with wait_ms)",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$"), ("partition" = u32, Path), FetchQuery),
    responses(
        (status = 200, description = "records from the offset on", content(
            (FetchResponse = "application/json"),
            (String = "application/vnd.shale.records"),
        )),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 416, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
)]
pub async fn fetch(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((topic, partition)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<FetchQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let topic = TopicName::new(topic)?;
    require(&principal, Operation::Consume, topic.as_str())?;
    let partition = parse_partition(&partition)?;
    let start = parse_offset(q.offset.as_deref())?;
    let max_records = q.max_records.unwrap_or(DEFAULT_MAX_RECORDS);
    if max_records == 0 || max_records > LIMIT_MAX_RECORDS {
        return Err(ApiError::invalid(format!("max_records must be between 1 and {LIMIT_MAX_RECORDS}")));
    }
    let max_bytes = q.max_bytes.unwrap_or(DEFAULT_MAX_BYTES).clamp(1, state.config.max_request_bytes);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(state.config.max_wait);
    let from = match start {
        Start::At(n) => n,
        Start::Earliest | Start::Latest => {
            let now = state.controller.read_partition(&topic, partition, 0, 0, Duration::ZERO).await?;
            match start {
                Start::Earliest => now.log_start_offset,
                _ => now.high_watermark,
            }
        }
    };
    let request = FetchRequest { topic, partition, from, max_records, max_bytes, wait };
    let fetched = state.reader.fetch(&request).await?;
    let bytes: usize = fetched.records.iter().map(|(_, r)| r.size()).sum();
    state.metrics.records_out.inc_by(fetched.records.len() as u64);
    state.metrics.bytes_out.inc_by(bytes as u64);
    if wants_binary(&headers) {
        let body = wire::encode_fetch(&wire::FetchBody {
            next_offset: fetched.next_offset,
            high_watermark: fetched.high_watermark,
            records: fetched.records,
        });
        return Ok(([(CONTENT_TYPE, wire::CONTENT_TYPE)], body).into_response());
    }
    let enc = q.encoding;
    let mut records = Vec::with_capacity(fetched.records.len());
    for (offset, r) in &fetched.records {
        let what = |part: &'static str| move || format!("the {part} of the record at offset {offset}");
        records.push(FetchedRecord {
            offset: *offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.as_ref().map(|k| enc.encode(k, what("key"))).transpose()?,
            value: match &r.value {
                Some(v) => enc.encode(v, what("value"))?,
                None => Value::Null,
            },
            headers: r
                .headers
                .iter()
                .map(|h| {
                    Ok(FetchedHeader { key: h.key.clone(), value: enc.encode(&h.value, what("header"))? })
                })
                .collect::<Result<_, ApiError>>()?,
        });
    }
    Ok(Json(FetchResponse {
        records,
        next_offset: fetched.next_offset,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
    .into_response())
}
