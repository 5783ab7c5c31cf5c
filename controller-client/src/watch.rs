//! The metadata feed gateways mirror: topics and partition indexes, and the
//! changes to them, versioned by the Raft log index that made them.
//!
//! A gateway asks once for the whole state, then long-polls for the changes
//! after the version it holds. Every node derives the same changes from the
//! same entries, so any node can serve the feed; a node that no longer holds
//! the changes after a version (it restarted, installed a snapshot, or the
//! changes aged out of its buffer) answers the whole state again.

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::meta::{ChunkRef, TopicConfig};

/// A partition as the mirror holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMirror {
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
    pub leader: Option<String>,
    pub leader_epoch: u64,
    /// The index: each entry's base offset and chunk, in offset order.
    pub index: Vec<(Offset, ChunkRef)>,
}

/// A topic as the mirror holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMirror {
    pub name: TopicName,
    pub id: u64,
    pub config: TopicConfig,
    pub created_ms: i64,
    pub partitions: Vec<PartitionMirror>,
}

/// A partition's leader gateway (its URL, if any) and leader epoch.
pub type Leader = (Option<String>, u64);

/// One change, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A committed chunk: the partition's index gains it and its high
    /// watermark moves past it.
    Appended {
        topic: TopicName,
        partition: PartitionId,
        base_offset: Offset,
        chunk: ChunkRef,
    },
    /// A partition changed otherwise (retention, a swap): its whole state.
    Partition {
        topic: TopicName,
        partition: PartitionId,
        state: PartitionMirror,
    },
    /// A topic was created, changed or grown: its whole state.
    Topic(TopicMirror),
    TopicDeleted {
        topic: TopicName,
    },
    /// Partition leaders moved: per topic, each partition's leader and epoch.
    Leaders {
        leaders: Vec<(TopicName, Vec<Leader>)>,
    },
}

/// An answer of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAnswer {
    /// The log index the answer brings the mirror up to.
    pub version: u64,
    /// The whole state, when the changes after the asked version are gone
    /// (or none was asked): replace the mirror with it.
    pub reset: Option<Vec<TopicMirror>>,
    /// Otherwise, the changes after the asked version, in order.
    pub changes: Vec<Change>,
}

/// `GET /api/watch`: `since` absent asks for the whole state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchQuery {
    pub since: Option<u64>,
    pub wait_ms: u64,
}
