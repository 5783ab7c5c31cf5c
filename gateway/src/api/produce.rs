//! Produce: JSON or binary bodies, partition choice, size limits.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use bytes::Bytes;
use http_body_util::LengthLimitError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shale_core::partitioner::partition_for_key;
use shale_core::wire::{self, ProduceRecord};
use shale_core::{ErrorCode, Header, PartitionId, Record, TopicName};

use super::encoding::Encoding;
use super::error::request_too_large;
use super::extract::{ApiPath, content_type, json_body};
use super::{ApiError, AppState};
use crate::batcher::{BufferPermit, PartitionedRecord};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceBody {
    #[serde(default)]
    encoding: Encoding,
    records: Vec<JsonRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    #[serde(default)]
    key: Option<Value>,
    value: Value,
    #[serde(default)]
    headers: Vec<JsonHeader>,
    partition: Option<PartitionId>,
    timestamp_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHeader {
    key: String,
    value: Value,
}

#[derive(Debug, Serialize)]
pub struct RecordAck {
    partition: PartitionId,
    offset: u64,
}

#[derive(Debug, Serialize)]
pub struct ProduceResponse {
    offsets: Vec<RecordAck>,
}

pub async fn produce(
    State(state): State<Arc<AppState>>,
    ApiPath(topic): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    let topic = TopicName::new(topic)?;
    let (permit, body) = admit(&state, &headers, body).await?;
    let records = parse_records(&headers, body)?;
    append(&state, topic, None, records, permit).await
}

pub async fn produce_to_partition(
    State(state): State<Arc<AppState>>,
    ApiPath((topic, partition)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<ProduceResponse>, ApiError> {
    let topic = TopicName::new(topic)?;
    let partition = parse_partition(&partition)?;
    let (permit, body) = admit(&state, &headers, body).await?;
    let records = parse_records(&headers, body)?;
    append(&state, topic, Some(partition), records, permit).await
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
    let permit = state.batcher.reserve(declared.unwrap_or(limit))?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
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

fn parse_records(headers: &HeaderMap, body: Bytes) -> Result<Vec<ProduceRecord>, ApiError> {
    let records = if content_type(headers).as_deref() == Some(wire::CONTENT_TYPE) {
        wire::decode(body).map_err(|e| ApiError::invalid(format!("malformed binary body: {e}")))?
    } else {
        let parsed: ProduceBody = json_body(headers, &body)?;
        from_json(parsed)?
    };
    if records.is_empty() {
        return Err(ApiError::invalid("records must not be empty"));
    }
    Ok(records)
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
                value: enc.decode(&r.value, &format!("record {i} value"))?,
                headers,
            })
        })
        .collect()
}

async fn append(
    state: &AppState,
    topic: TopicName,
    fixed: Option<PartitionId>,
    records: Vec<ProduceRecord>,
    permit: BufferPermit,
) -> Result<Json<ProduceResponse>, ApiError> {
    let info = state.controller.describe_topic(&topic).await?;
    let partitions = info.partitions.len() as PartitionId;
    let missing = |p: PartitionId| {
        ApiError::new(
            ErrorCode::PartitionNotFound,
            format!("topic {topic} has no partition {p} (it has {partitions})"),
        )
    };
    if let Some(p) = fixed.filter(|p| *p >= partitions) {
        return Err(missing(p));
    }
    let sticky = state.sticky.fetch_add(1, Ordering::Relaxed) % partitions.max(1);
    let now = state.clock.now_ms();
    let limit = state.config.max_record_bytes;
    let mut batch = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let partition = match (fixed, r.partition) {
            (Some(p), Some(q)) if p != q => {
                return Err(ApiError::invalid(format!(
                    "record {i} names partition {q} but was sent to partition {p}"
                )));
            }
            (Some(p), _) => p,
            (None, Some(q)) if q >= partitions => return Err(missing(q)),
            (None, Some(q)) => q,
            (None, None) => r.key.as_ref().map_or(sticky, |k| partition_for_key(k, partitions)),
        };
        let record = Record {
            timestamp_ms: r.timestamp_ms.unwrap_or(now),
            key: r.key,
            value: r.value,
            headers: r.headers,
        };
        if record.size() > limit {
            return Err(ApiError::new(
                ErrorCode::RecordTooLarge,
                format!("record {i} is {} bytes; the limit is {limit} bytes", record.size()),
            )
            .with("limit_bytes", limit));
        }
        batch.push(PartitionedRecord { partition, record });
    }
    let count = batch.len() as u64;
    let bytes: usize = batch.iter().map(|r| r.record.size()).sum();
    let acked = state.batcher.append(topic, info.id, batch, permit).await?;
    state.metrics.records_in.inc_by(count);
    state.metrics.bytes_in.inc_by(bytes as u64);
    Ok(Json(ProduceResponse {
        offsets: acked.into_iter().map(|(partition, offset)| RecordAck { partition, offset }).collect(),
    }))
}
