//! The metadata model: topics, partitions and their index. Pure and
//! deterministic: [`Metadata::apply`] takes a command and returns a reply,
//! with no I/O and no clock.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::types::{Command, CommandReply, CommitSegment};

/// Where a committed chunk lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub object: String,
    pub position: u64,
    pub len: u32,
    pub record_count: u32,
    pub max_timestamp_ms: i64,
}

/// Topic settings. Stored and shown now; enforced by the compactor.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Delete data older than this (milliseconds); none = keep forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Delete the oldest data beyond this many bytes per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    #[error("topic {topic} has no partition {partition} (it has {partitions})")]
    PartitionNotFound { topic: String, partition: PartitionId, partitions: u32 },
    #[error("invalid request: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub log_start_offset: Offset,
    /// The next offset to assign; every offset below it is committed.
    pub high_watermark: Offset,
    pub index: BTreeMap<Offset, ChunkRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicState {
    pub id: u64,
    pub config: TopicConfig,
    pub created_ms: i64,
    pub partitions: Vec<PartitionState>,
}

/// A partition as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: PartitionId,
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
}

/// A topic as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: TopicName,
    pub id: u64,
    pub config: TopicConfig,
    pub created_ms: i64,
    pub partitions: Vec<PartitionInfo>,
}

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// All metadata the controller replicates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub topics: BTreeMap<TopicName, TopicState>,
    pub next_topic_id: u64,
}

impl Metadata {
    pub fn apply(&mut self, command: &Command) -> CommandReply {
        match command {
            Command::CreateTopic { name, partitions, config, created_ms } => {
                match self.create_topic(name, *partitions, config, *created_ms) {
                    Ok(info) => CommandReply::TopicCreated(info),
                    Err(e) => CommandReply::Failed(e),
                }
            }
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => CommandReply::TopicDeleted,
                None => CommandReply::Failed(MetaError::TopicNotFound(name.to_string())),
            },
            Command::CommitSegment(commit) => CommandReply::Committed(self.commit(commit)),
        }
    }

    fn create_topic(
        &mut self,
        name: &TopicName,
        partitions: u32,
        config: &TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, MetaError> {
        if self.topics.contains_key(name) {
            return Err(MetaError::TopicExists(name.to_string()));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(MetaError::Invalid(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
            )));
        }
        self.next_topic_id += 1;
        let topic = TopicState {
            id: self.next_topic_id,
            config: config.clone(),
            created_ms,
            partitions: vec![PartitionState::default(); partitions as usize],
        };
        self.topics.insert(name.clone(), topic);
        self.topic_info(name)
    }

    fn commit(&mut self, commit: &CommitSegment) -> Vec<Result<Offset, MetaError>> {
        commit
            .chunks
            .iter()
            .map(|chunk| {
                let partition = self.partition_mut(&chunk.topic, chunk.partition)?;
                let (topic_id, p) = partition;
                if topic_id != chunk.topic_id {
                    return Err(MetaError::TopicNotFound(chunk.topic.to_string()));
                }
                if chunk.record_count == 0 {
                    return Err(MetaError::Invalid("empty chunk".into()));
                }
                let base = p.high_watermark;
                p.index.insert(
                    base,
                    ChunkRef {
                        object: commit.object.clone(),
                        position: chunk.position,
                        len: chunk.len,
                        record_count: chunk.record_count,
                        max_timestamp_ms: chunk.max_timestamp_ms,
                    },
                );
                p.high_watermark += u64::from(chunk.record_count);
                Ok(base)
            })
            .collect()
    }

    fn partition_mut(
        &mut self,
        topic: &TopicName,
        partition: PartitionId,
    ) -> Result<(u64, &mut PartitionState), MetaError> {
        let t = self.topics.get_mut(topic).ok_or_else(|| MetaError::TopicNotFound(topic.to_string()))?;
        let partitions = t.partitions.len() as u32;
        let id = t.id;
        let p = t.partitions.get_mut(partition as usize).ok_or_else(|| MetaError::PartitionNotFound {
            topic: topic.to_string(),
            partition,
            partitions,
        })?;
        Ok((id, p))
    }

    pub fn partition(&self, topic: &TopicName, partition: PartitionId) -> Result<&PartitionState, MetaError> {
        let t = self.topics.get(topic).ok_or_else(|| MetaError::TopicNotFound(topic.to_string()))?;
        t.partitions.get(partition as usize).ok_or_else(|| MetaError::PartitionNotFound {
            topic: topic.to_string(),
            partition,
            partitions: t.partitions.len() as u32,
        })
    }

    pub fn topic_info(&self, name: &TopicName) -> Result<TopicInfo, MetaError> {
        let t = self.topics.get(name).ok_or_else(|| MetaError::TopicNotFound(name.to_string()))?;
        Ok(TopicInfo {
            name: name.clone(),
            id: t.id,
            config: t.config.clone(),
            created_ms: t.created_ms,
            partitions: t
                .partitions
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionInfo {
                    partition: i as PartitionId,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                })
                .collect(),
        })
    }
}

impl PartitionState {
    /// The chunks holding `offset` and after, at most `max` of them.
    pub fn chunks_from(&self, offset: Offset, max: usize) -> Vec<(Offset, ChunkRef)> {
        let first =
            self.index.range(..=offset).next_back().map(|(base, _)| *base).filter(|base| {
                self.index.get(base).is_some_and(|c| offset < base + u64::from(c.record_count))
            });
        let start = match first {
            Some(base) => Bound::Included(base),
            None => Bound::Excluded(offset),
        };
        self.index.range((start, Bound::Unbounded)).take(max).map(|(b, c)| (*b, c.clone())).collect()
    }
}

#[cfg(test)]
mod tests;
