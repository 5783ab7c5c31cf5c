//! Compaction leases and swaps: compactors heartbeat like gateways and are
//! given partitions to rewrite, each with an epoch (`leadership.rs`, with
//! [`Role::Compactor`]). A compactor rewrites a run of a partition's index
//! entries into one object and swaps it in with `ReplaceRange`, which only
//! the current lease holder at its epoch can do, and only while the run is
//! still in the index exactly as it was read. Offsets never change.

use std::collections::BTreeSet;

use shale_core::Offset;

use super::leadership::{self, Role};
use super::{ChunkRef, CompactionTask, CompactorLease, MetaError, Metadata};
use crate::types::ReplaceRange;

impl Metadata {
    /// Extends (or starts) the compactor's lease; answers what it holds.
    pub(super) fn compactor_heartbeat(&mut self, id: &str, now_ms: i64, lease_ms: u64) -> CompactorLease {
        let (lease, joined) = self.compactors.heartbeat(id, now_ms, lease_ms);
        if joined {
            leadership::rebalance(&mut self.topics, &self.compactors, Role::Compactor);
        }
        let tasks = self
            .topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions.iter().enumerate().filter(|(_, p)| p.compactor.as_deref() == Some(id)).map(
                    |(i, p)| CompactionTask {
                        topic: name.clone(),
                        topic_id: t.id,
                        partition: i as u32,
                        epoch: p.compactor_epoch,
                    },
                )
            })
            .collect();
        let collector = self.compactors.live().next().is_some_and(|first| first.url == id);
        CompactorLease { lease, tasks, collector }
    }

    pub(super) fn replace_range(&mut self, r: &ReplaceRange) -> Result<(), MetaError> {
        let (id, p) = self.partition_mut(&r.topic, r.partition)?;
        if id != r.topic_id {
            return Err(MetaError::TopicNotFound(r.topic.to_string()));
        }
        if p.compactor.as_deref() != Some(r.compactor.as_str()) || p.compactor_epoch != r.epoch {
            return Err(MetaError::Fenced(format!(
                "{} at epoch {} does not hold the lease of {}/{} (epoch {})",
                r.compactor, r.epoch, r.topic, r.partition, p.compactor_epoch
            )));
        }
        if r.first_offset >= r.end_offset || u64::from(r.chunk.record_count) != r.end_offset - r.first_offset
        {
            return Err(MetaError::Invalid(format!(
                "a rewrite of [{}, {}) must hold {} records, not {}",
                r.first_offset,
                r.end_offset,
                r.end_offset.saturating_sub(r.first_offset),
                r.chunk.record_count
            )));
        }
        // the run must start and end on entry boundaries, with no gap
        let mut next: Offset = r.first_offset;
        let mut bases = Vec::new();
        for (base, chunk) in p.index.range(r.first_offset..r.end_offset) {
            if *base != next {
                break;
            }
            bases.push(*base);
            next = base + u64::from(chunk.record_count);
        }
        if bases.is_empty() || next != r.end_offset {
            return Err(MetaError::Fenced(format!(
                "[{}, {}) of {}/{} is no longer in the index as it was read",
                r.first_offset, r.end_offset, r.topic, r.partition
            )));
        }
        for base in bases {
            p.index.remove(&base);
        }
        let chunk = ChunkRef { committed_ms: r.now_ms, ..r.chunk.clone() };
        p.index.insert(r.first_offset, chunk);
        Ok(())
    }

    /// Every object an index entry references.
    pub fn referenced_objects(&self) -> BTreeSet<&str> {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .flat_map(|p| p.index.values())
            .map(|c| c.object.as_str())
            .collect()
    }

    /// Index entries across every partition (what the state grows with).
    pub fn index_entries(&self) -> usize {
        self.topics.values().flat_map(|t| &t.partitions).map(|p| p.index.len()).sum()
    }
}

#[cfg(test)]
mod tests;
