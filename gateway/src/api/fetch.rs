//! Fetch records of one partition from an offset, with long-poll.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shale_core::wire;
use shale_core::{ErrorCode, Offset, Record, TopicName};

use super::encoding::Encoding;
use super::extract::{ApiPath, ApiQuery};
use super::openapi::ErrorBody;
use super::produce::parse_partition;
use super::stream::{self, Turn};
use super::{ApiError, AppState, require};
use crate::reader::{FetchRequest, Fetched};
use crate::service::read::count_out;
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
    pub key: String,
    pub value: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FetchedRecord {
    #[schema(value_type = u64)]
    pub offset: Offset,
    pub timestamp_ms: i64,
    pub key: Option<Value>,
    pub value: Value,
    pub headers: Vec<FetchedHeader>,
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

pub enum Start {
    Earliest,
    Latest,
    At(Offset),
}

pub fn parse_offset(s: Option<&str>) -> Result<Start, ApiError> {
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
    summary = "Fetch records from an offset (long-poll with wait_ms; a stream with Accept: text/event-stream)",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$"), ("partition" = u32, Path), FetchQuery),
    responses(
        (status = 200, description = "records from the offset on", content(
            (FetchResponse = "application/json"),
            (String = "application/vnd.shale.records"),
            (String = "text/event-stream"),
        )),
        (status = 429, body = ErrorBody),
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
    if stream::wants_events(&headers) {
        let from = match stream::last_event_id(&headers) {
            Some(id) => id.parse().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidOffset,
                    format!("Last-Event-ID must be an offset, got {id:?}"),
                )
            })?,
            None => from,
        };
        let permit = stream::admit(&state)?;
        let request =
            FetchRequest { topic, partition, from, max_records, max_bytes, wait: state.config.max_wait };
        let enc = q.encoding;
        let st = state.clone();
        return Ok(stream::respond(state, permit, request, move |mut request| {
            let state = st.clone();
            async move {
                let fetched = match state.reader.fetch(&request).await {
                    Ok(fetched) => fetched,
                    Err(e) => return (Turn::End(e.into()), request),
                };
                if fetched.records.is_empty() {
                    return (Turn::Quiet, request);
                }
                count_out(&state, &fetched.records);
                request.from = fetched.next_offset;
                let turn = match answer(&fetched, enc) {
                    Ok(body) => match Event::default()
                        .id(fetched.next_offset.to_string())
                        .event("records")
                        .json_data(body)
                    {
                        Ok(event) => Turn::Event(event),
                        Err(e) => Turn::End(ApiError::new(ErrorCode::Internal, e.to_string())),
                    },
                    Err(e) => Turn::End(e),
                };
                (turn, request)
            }
        }));
    }
    let request = FetchRequest { topic, partition, from, max_records, max_bytes, wait };
    let fetched = state.reader.fetch(&request).await?;
    count_out(&state, &fetched.records);
    if wants_binary(&headers) {
        let body = wire::encode_fetch(&wire::FetchBody {
            next_offset: fetched.next_offset,
            high_watermark: fetched.high_watermark,
            records: fetched.records,
        });
        return Ok(([(CONTENT_TYPE, wire::CONTENT_TYPE)], body).into_response());
    }
    Ok(Json(answer(&fetched, q.encoding)?).into_response())
}

fn answer(fetched: &Fetched, enc: Encoding) -> Result<FetchResponse, ApiError> {
    Ok(FetchResponse {
        records: fetched
            .records
            .iter()
            .map(|(offset, r)| render(*offset, r, enc))
            .collect::<Result<_, _>>()?,
        next_offset: fetched.next_offset,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
    })
}

/// A record as the JSON answers show it, its bytes written per `enc`.
pub fn render(offset: Offset, r: &Record, enc: Encoding) -> Result<FetchedRecord, ApiError> {
    let what = |part: &'static str| move || format!("the {part} of the record at offset {offset}");
    Ok(FetchedRecord {
        offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key.as_ref().map(|k| enc.encode(k, what("key"))).transpose()?,
        value: match &r.value {
            Some(v) => enc.encode(v, what("value"))?,
            None => Value::Null,
        },
        headers: r
            .headers
            .iter()
            .map(|h| Ok(FetchedHeader { key: h.key.clone(), value: enc.encode(&h.value, what("header"))? }))
            .collect::<Result<_, ApiError>>()?,
    })
}
