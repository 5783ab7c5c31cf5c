//! The metadata as clients see it: topics, partitions, chunks, leases, and
//! the errors the controller answers with.

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

/// Where a committed range of records lives: a chunk of a segment object,
/// or a whole Parquet file of the archive (`position` 0, `len` its size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub object: String,
    pub position: u64,
    pub len: u32,
    pub record_count: u32,
    pub max_timestamp_ms: i64,
    /// When the records were committed (the controller leader's clock; for
    /// a rewritten range, the latest of its parts): the archive's age.
    #[serde(default)]
    pub committed_ms: i64,
    #[serde(default, skip_serializing_if = "ChunkFormat::is_segment")]
    pub format: ChunkFormat,
}

/// How the bytes a [`ChunkRef`] points at are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkFormat {
    /// A chunk of a segment object (`shale_core::segment`).
    #[default]
    Segment,
    /// A Parquet file of the archive (`shale_core::archive`), one row per
    /// offset from the entry's base offset.
    Parquet,
}

impl ChunkFormat {
    pub fn is_segment(&self) -> bool {
        *self == ChunkFormat::Segment
    }
}

/// Default of [`TopicConfig::archive_after_ms`]: records are queryable as
/// Parquet about a minute after they are produced.
pub const DEFAULT_ARCHIVE_AFTER_MS: u64 = 60_000;

/// Topic settings. Retention is enforced by the controller leader (whole
/// chunks from the front of each partition; see the controller's
/// `model/retention.rs`); archiving by the compactor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Delete data older than this (milliseconds); none = keep forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Delete the oldest data beyond this many bytes per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Records older than this (milliseconds) are rewritten into the
    /// topic's Parquet archive, which then serves them (default 60 000).
    pub archive_after_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self { retention_ms: None, retention_bytes: None, archive_after_ms: DEFAULT_ARCHIVE_AFTER_MS }
    }
}

/// Consecutive offsets of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRun {
    pub partition: PartitionId,
    pub base_offset: Offset,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    /// The idempotency key was committed before: nothing was written again;
    /// these are the original offsets, in request order.
    #[error("request already committed")]
    Duplicate { offsets: Vec<OffsetRun> },
    #[error("expected next offset {expected}, but it is {actual}")]
    OffsetMismatch { expected: Offset, actual: Offset },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    #[error("topic {topic} has no partition {partition} (it has {partitions})")]
    PartitionNotFound { topic: String, partition: PartitionId, partitions: u32 },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("token {0} already exists")]
    TokenExists(String),
    #[error("token {0} does not exist")]
    TokenNotFound(String),
    /// A compactor's swap was refused: its lease moved on, or the range it
    /// rewrote is no longer in the index as it was. Nothing changed.
    #[error("compaction refused: {0}")]
    Fenced(String),
    /// A segment waited too long between its PUT and its commit (garbage
    /// collection may have deleted it): nothing was committed; retry.
    #[error("{0}")]
    SegmentExpired(String),
}

/// A partition as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartitionInfo {
    #[schema(value_type = u32)]
    pub partition: PartitionId,
    #[schema(value_type = u64)]
    pub log_start_offset: Offset,
    #[schema(value_type = u64)]
    pub high_watermark: Offset,
    /// The leader gateway's URL: send this partition's traffic there.
    pub leader: Option<String>,
    pub leader_epoch: u64,
}

/// A topic as shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicInfo {
    #[schema(value_type = String)]
    pub name: TopicName,
    pub id: u64,
    pub config: TopicConfig,
    pub created_ms: i64,
    pub partitions: Vec<PartitionInfo>,
}

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A partition a compactor holds the lease to rewrite, with the lease's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionTask {
    pub topic: TopicName,
    pub topic_id: u64,
    pub partition: PartitionId,
    pub epoch: u64,
}

/// A compactor's lease and the work it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactorLease {
    pub lease: GatewayLease,
    pub tasks: Vec<CompactionTask>,
    /// Whether this compactor is the one that collects garbage (the first
    /// live compactor by id), so one listing of the bucket serves all.
    pub collector: bool,
}

/// A live gateway: its advertised URL (its identity) and its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLease {
    pub url: String,
    pub registered_ms: i64,
    pub expires_ms: i64,
}
