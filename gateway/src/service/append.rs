//! Append: partition choice (Kafka's partitioner for keys, round robin
//! for neither key nor partition), validation, and the outcome-unknown rule.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shale_core::partitioner::partition_for_key;
use shale_core::record::{MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};
use shale_core::wire::ProduceRecord;
use shale_core::{ErrorCode, PartitionId, Record, TopicName};

use super::ServiceError;
use crate::batcher::{Acked, BufferPermit, PartitionedRecord, Queued, RequestGuard};
use crate::metrics::GatewayMetrics;
use crate::state::AppState;

/// Validates the records (partition, key on compacted topics, timestamp,
/// size), appends them and answers where each was written, once durable.
pub async fn append(
    state: &AppState,
    topic: TopicName,
    fixed: Option<PartitionId>,
    records: Vec<ProduceRecord>,
    guard: Option<RequestGuard>,
    permit: BufferPermit,
) -> Result<Acked, ServiceError> {
    submit(state, topic, fixed, records, guard, permit).await?.acked().await
}

/// Records validated and queued in the batcher, in the order submitted;
/// [`Submitted::acked`] waits for their commit.
pub struct Submitted {
    queued: Queued,
    keyed: bool,
    count: u64,
    bytes: u64,
    metrics: Arc<GatewayMetrics>,
}

impl Submitted {
    /// Where each record was written, once durable.
    pub async fn acked(self) -> Result<Acked, ServiceError> {
        let keyed = self.keyed;
        let acked = self.queued.acked().await.map_err(|e| {
            let mut e = ServiceError::from(e);
            if keyed && e.code == ErrorCode::OutcomeUnknown {
                // the idempotency key makes the retry safe
                e.retryable = Some(true);
            }
            e
        })?;
        self.metrics.records_in.inc_by(self.count);
        self.metrics.bytes_in.inc_by(self.bytes);
        Ok(acked)
    }
}

/// [`append`] up to the batcher's queue: requests submitted one after the
/// other are committed in that order (a Kafka connection's produces).
pub async fn submit(
    state: &AppState,
    topic: TopicName,
    fixed: Option<PartitionId>,
    records: Vec<ProduceRecord>,
    guard: Option<RequestGuard>,
    permit: BufferPermit,
) -> Result<Submitted, ServiceError> {
    let info = state.controller.describe_topic(&topic).await?;
    let partitions = info.partitions.len() as PartitionId;
    let missing = |p: PartitionId| {
        ServiceError::new(
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
    let compacted = info.config.cleanup_policy.compacts();
    let mut batch = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let partition = match (fixed, r.partition) {
            (Some(p), Some(q)) if p != q => {
                return Err(ServiceError::invalid(format!(
                    "record {i} names partition {q} but was sent to partition {p}"
                )));
            }
            (Some(p), _) => p,
            (None, Some(q)) if q >= partitions => return Err(missing(q)),
            (None, Some(q)) => q,
            (None, None) => r.key.as_ref().map_or(sticky, |k| partition_for_key(k, partitions)),
        };
        if compacted && r.key.is_none() {
            return Err(ServiceError::invalid(format!(
                "record {i} has no key; topic {topic} is compacted (cleanup_policy {}), which keeps the \
                 latest record per key, so every record needs one",
                info.config.cleanup_policy.as_str()
            )));
        }
        let timestamp_ms = r.timestamp_ms.unwrap_or(now);
        if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&timestamp_ms) {
            return Err(ServiceError::invalid(format!(
                "record {i} has timestamp_ms {timestamp_ms}; it must be within \
                 [{MIN_TIMESTAMP_MS}, {MAX_TIMESTAMP_MS}] (microseconds must fit 64 bits, as the archive stores them)"
            )));
        }
        let record = Record { timestamp_ms, key: r.key, value: r.value, headers: r.headers };
        if record.size() > limit {
            return Err(ServiceError::new(
                ErrorCode::RecordTooLarge,
                format!("record {i} is {} bytes; the limit is {limit} bytes", record.size()),
            )
            .with("limit_bytes", limit));
        }
        batch.push(PartitionedRecord { partition, record });
    }
    let count = batch.len() as u64;
    let bytes: usize = batch.iter().map(|r| r.record.size()).sum();
    let keyed = guard.as_ref().is_some_and(|g| g.idempotency_key.is_some());
    let queued = state.batcher.submit(topic, info.id, batch, guard, permit).await?;
    Ok(Submitted { queued, keyed, count, bytes: bytes as u64, metrics: state.metrics.clone() })
}
