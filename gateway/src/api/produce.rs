//! Produce: JSON or binary bodies, partition choice, size limits.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use axum::{Extension, Json};
use bytes::Bytes;
use http_body_util::LengthLimitError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shale_core::wire::{self, ProduceRecord};
use shale_core::{Header, Offset, PartitionId, TopicName};

use super::encoding::Encoding;
use super::error::{body_timeout, request_too_large};
use super::extract::{ApiPath, ApiQuery, content_type, json_body};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, require};
use crate::batcher::{Acked, BufferPermit, RequestGuard};
use crate::service::append::append;
use shale_controller_client::auth::{Operation, Principal};

/// A produce request in JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProduceBody {
    /// How keys, values and header values are written.
    #[serde(default)]
    encoding: Encoding,
    records: Vec<JsonRecord>,
    /// Conditional append (single-partition produce only).
    #[schema(value_type = Option<u64>)]
    expected_offset: Option<Offset>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProduceQuery {
    /// Conditional append: only if the partition's next offset is this.
    #[param(value_type = Option<u64>)]
    expected_offset: Option<Offset>,
}

/// The `Idempotency-Key` request header.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// A parsed produce request.
struct Produce {
    records: Vec<ProduceRecord>,
    expected_offset: Option<Offset>,
}

/// One record: key, value and header values per the body's `encoding`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonRecord {
    #[serde(default)]
    key: Option<Value>,
    /// `null` is a tombstone (Kafka's null value), in every encoding.
    value: Value,
    #[serde(default)]
    headers: Vec<JsonHeader>,
    #[schema(value_type = Option<u32>)]
    partition: Option<PartitionId>,
    timestamp_ms: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonHeader {
    key: String,
    value: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordAck {
    #[schema(value_type = u32)]
    partition: PartitionId,
    offset: u64,
}

/// Partition and offset of each record, in request order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProduceResponse {
    offsets: Vec<RecordAck>,
}

#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/records",
    tag = "records",
    summary = "Produce records; keyed records go where Kafka's partitioner puts them",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 256 visible ASCII characters: a retry with the same key answers the original offsets and writes nothing")),
    request_body(content(
        (ProduceBody = "application/json"),
        (String = "application/vnd.shale.records"),
    )),
    responses(
        (status = 200, description = "acknowledged: in the store and committed", body = ProduceResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 408, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ),
)]
pub async fn produce(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(topic): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    let topic = TopicName::new(topic)?;
    require(&principal, Operation::Produce, topic.as_str())?;
    let key = idempotency_key(&headers)?;
    let (permit, body) = admit(&state, &headers, body).await?;
    let produce = parse_records(&headers, body)?;
    if produce.expected_offset.is_some() {
        return Err(ApiError::invalid(
            "expected_offset needs a single partition: POST …/partitions/{p}/records",
        ));
    }
    let guard = key.map(|k| RequestGuard { idempotency_key: Some(k), ..RequestGuard::default() });
    Ok(append(&state, topic, None, produce.records, guard, permit).await.map(answer)?)
}

#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/partitions/{partition}/records",
    tag = "records",
    summary = "Produce records to one partition, optionally only at an expected offset",
    params(("topic" = String, Path, pattern = r"^[a-zA-Z0-9._-]{1,249}$"), ("partition" = u32, Path), ProduceQuery, ("Idempotency-Key" = Option<String>, Header, description = "1 to 256 visible ASCII characters: a retry with the same key answers the original offsets and writes nothing")),
    request_body(content(
        (ProduceBody = "application/json"),
        (String = "application/vnd.shale.records"),
    )),
    responses(
        (status = 200, description = "acknowledged: in the store and committed", body = ProduceResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 408, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
    ),
)]
pub async fn produce_to_partition(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((topic, partition)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ProduceQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    let topic = TopicName::new(topic)?;
    require(&principal, Operation::Produce, topic.as_str())?;
    let partition = parse_partition(&partition)?;
    let key = idempotency_key(&headers)?;
    let (permit, body) = admit(&state, &headers, body).await?;
    let produce = parse_records(&headers, body)?;
    let expected_offset = match (query.expected_offset, produce.expected_offset) {
        (Some(q), Some(b)) if q != b => {
            return Err(ApiError::invalid("expected_offset differs between the query and the body"));
        }
        (q, b) => q.or(b),
    };
    let guard = (key.is_some() || expected_offset.is_some()).then_some(RequestGuard {
        idempotency_key: key,
        expected_offset,
        producer: None,
    });
    Ok(append(&state, topic, Some(partition), produce.records, guard, permit).await.map(answer)?)
}

/// The `Idempotency-Key` header: 1 to 256 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic())
    });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::invalid(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

/// Admission: reserve buffer room for the body before reading it (by its
/// `Content-Length`, else the request limit), then read it within the limit.
/// A full buffer answers 429 without reading the body.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(BufferPermit, Bytes), ApiError> {
    let limit = state.config.max_request_bytes;
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: usize| n > limit) {
        return Err(request_too_large(limit));
    }
    let permit = state.batcher.reserve(declared.unwrap_or(limit)).map_err(|e| ApiError::from(e).closing())?;
    // a stalled upload gives its buffer space back when the permit drops
    let read = tokio::time::timeout(state.config.body_timeout, axum::body::to_bytes(body, limit));
    let bytes = read.await.map_err(|_| body_timeout(state.config.body_timeout))?.map_err(|e| {
        let e = e.into_inner();
        if e.is::<LengthLimitError>() {
            request_too_large(limit)
        } else {
            ApiError::invalid(format!("cannot read body: {e}"))
        }
    })?;
    Ok((permit, bytes))
}

pub fn parse_partition(s: &str) -> Result<PartitionId, ApiError> {
    s.parse().map_err(|_| ApiError::invalid(format!("partition must be a non-negative integer, got {s:?}")))
}

fn parse_records(headers: &HeaderMap, body: Bytes) -> Result<Produce, ApiError> {
    let produce = if content_type(headers).as_deref() == Some(wire::CONTENT_TYPE) {
        let records =
            wire::decode(body).map_err(|e| ApiError::invalid(format!("malformed binary body: {e}")))?;
        Produce { records, expected_offset: None }
    } else {
        let parsed: ProduceBody = json_body(headers, &body)?;
        let expected_offset = parsed.expected_offset;
        Produce { records: from_json(parsed)?, expected_offset }
    };
    if produce.records.is_empty() {
        return Err(ApiError::invalid("records must not be empty"));
    }
    Ok(produce)
}

fn from_json(body: ProduceBody) -> Result<Vec<ProduceRecord>, ApiError> {
    let enc = body.encoding;
    body.records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let key = match &r.key {
                None | Some(Value::Null) => None,
                Some(k) => Some(enc.decode(k, &format!("record {i} key"))?),
            };
            let headers = r
                .headers
                .iter()
                .map(|h| {
                    Ok(Header {
                        key: h.key.clone(),
                        value: enc.decode(&h.value, &format!("record {i} header"))?,
                    })
                })
                .collect::<Result<_, ApiError>>()?;
            Ok(ProduceRecord {
                partition: r.partition,
                timestamp_ms: r.timestamp_ms,
                key,
                // null is a tombstone, whatever the encoding
                value: match &r.value {
                    Value::Null => None,
                    v => Some(enc.decode(v, &format!("record {i} value"))?),
                },
                headers,
            })
        })
        .collect()
}

/// Where each record went, as the HTTP answer lists it.
fn answer(acked: Acked) -> Json<ProduceResponse> {
    Json(ProduceResponse {
        offsets: acked.into_iter().map(|(partition, offset)| RecordAck { partition, offset }).collect(),
    })
}
