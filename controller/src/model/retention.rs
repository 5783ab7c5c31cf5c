//! Retention: a topic's `retention_ms` and `retention_bytes` drop whole
//! chunks from the front of each partition and advance its
//! `log_start_offset`, through one `ApplyRetention { now_ms }` command the
//! controller leader proposes with its own clock. A chunk goes when its
//! newest record is older than `retention_ms`, or when the partition would
//! still hold at least `retention_bytes` of stored (compressed) chunk bytes
//! without it (Kafka's rule: never below the limit). As in Kafka, only a
//! prefix of the log goes, whole chunks at a time. The objects
//! themselves stay until garbage collection finds them unreferenced.
//! Topics whose `cleanup_policy` is `compact` alone have no retention.

use shale_core::{Offset, PartitionId, TopicName};

use super::{MetaError, Metadata, PartitionState, TopicConfig, TopicInfo};

impl Metadata {
    /// Whether [`Metadata::apply_retention`] at `now_ms` would drop anything.
    pub fn retention_due(&self, now_ms: i64) -> bool {
        self.topics
            .values()
            .filter(|t| retains(&t.config))
            .any(|t| t.partitions.iter().any(|p| expired_chunks(p, &t.config, now_ms) > 0))
    }

    /// Drops expired chunks; returns how many went.
    pub(super) fn apply_retention(&mut self, now_ms: i64) -> u64 {
        let mut dropped = 0;
        for topic in self.topics.values_mut() {
            if !retains(&topic.config) {
                continue;
            }
            for p in &mut topic.partitions {
                let n = expired_chunks(p, &topic.config, now_ms);
                for _ in 0..n {
                    p.index.pop_first();
                }
                let start = p.index.first_key_value().map_or(p.high_watermark, |(base, _)| *base);
                debug_assert!(start >= p.log_start_offset, "the log start never moves back");
                p.log_start_offset = p.log_start_offset.max(start);
                dropped += n as u64;
            }
        }
        dropped
    }
}

impl Metadata {
    /// Moves a partition's log start up to `before` (Kafka's DeleteRecords),
    /// dropping the chunks wholly below it; never back, never past the high
    /// watermark.
    pub(super) fn delete_records(
        &mut self,
        topic: &TopicName,
        partition: PartitionId,
        before: Offset,
    ) -> Result<TopicInfo, MetaError> {
        let (_, p) = self.partition_mut(topic, partition)?;
        if before > p.high_watermark {
            return Err(MetaError::Invalid(format!(
                "cannot delete records before offset {before}: the high watermark is {}",
                p.high_watermark
            )));
        }
        let start = p.log_start_offset.max(before);
        // a chunk goes when the next one (or the high watermark) starts at or below the new start
        while let Some(end) =
            p.index.keys().nth(1).copied().or(p.index.first_key_value().map(|_| p.high_watermark))
            && end <= start
        {
            p.index.pop_first();
        }
        p.log_start_offset = start;
        self.topic_info(topic)
    }
}

/// Whether the topic has retention: a limit, and a cleanup policy that
/// deletes (a `compact` topic keeps every key's latest record forever).
fn retains(config: &TopicConfig) -> bool {
    config.cleanup_policy.deletes() && (config.retention_ms.is_some() || config.retention_bytes.is_some())
}

/// How many chunks at the front of the partition are past retention.
fn expired_chunks(p: &PartitionState, config: &TopicConfig, now_ms: i64) -> usize {
    let horizon = config.retention_ms.map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
    let mut held: u64 = match config.retention_bytes {
        Some(_) => p.index.values().map(|c| u64::from(c.len)).sum(),
        None => 0,
    };
    let mut n = 0;
    for chunk in p.index.values() {
        let too_old = horizon.is_some_and(|h| chunk.max_timestamp_ms < h);
        let too_big =
            config.retention_bytes.is_some_and(|limit| held.saturating_sub(u64::from(chunk.len)) >= limit);
        if !too_old && !too_big {
            break;
        }
        held = held.saturating_sub(u64::from(chunk.len));
        n += 1;
    }
    n
}
