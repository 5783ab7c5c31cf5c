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
    /// A Parquet file of the archive (`shale_core::archive`): a row per
    /// offset of the entry's span, or, once a compacted topic's file is
    /// cleaned, the rows that survived, in offset order.
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
/// Default of [`TopicConfig::delete_retention_ms`]: a day, as in Kafka.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// What happens to old records, as Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum CleanupPolicy {
    /// Retention deletes whole files past `retention_ms` / `retention_bytes`.
    #[default]
    #[serde(rename = "delete")]
    Delete,
    /// The archive keeps the latest record per key; retention is off.
    #[serde(rename = "compact")]
    Compact,
    /// Both: the archive is compacted, and retention deletes what is old.
    #[serde(rename = "compact,delete", alias = "delete,compact")]
    CompactDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// Topic settings. Retention is enforced by the controller leader (whole
/// chunks from the front of each partition; see the controller's
/// `model/retention.rs`); archiving by the compactor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Delete data older than this (milliseconds); none = keep forever.
    /// Applies when `cleanup_policy` includes `delete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Delete the oldest data beyond this many bytes per partition.
    /// Applies when `cleanup_policy` includes `delete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Records older than this (milliseconds) are rewritten into the
    /// topic's Parquet archive, which then serves them (default 60 000).
    pub archive_after_ms: u64,
    /// `delete` (default), `compact` (keep the latest record per key; every
    /// record needs a key) or `compact,delete`.
    pub cleanup_policy: CleanupPolicy,
    /// On a compacted topic, a tombstone (null value) is dropped by the
    /// first cleaning after its timestamp is this old (default a day).
    pub delete_retention_ms: u64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            retention_ms: None,
            retention_bytes: None,
            archive_after_ms: DEFAULT_ARCHIVE_AFTER_MS,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DEFAULT_DELETE_RETENTION_MS,
        }
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
    #[error("group {0} does not exist")]
    GroupNotFound(String),
    #[error("group {group} has no member {member}")]
    MemberNotFound { group: String, member: String },
    /// A commit from a stale member epoch, or for a partition the member
    /// does not own: nothing changed.
    #[error("{0}")]
    StaleMember(String),
    /// The operation needs a group without live members.
    #[error("group {0} has live members")]
    GroupNotEmpty(String),
    /// A member of one protocol joining a group of the other: a group's
    /// kind is fixed by its first member (Kafka's classic protocol, with
    /// client-side assignment, or Shale's server-side assignment).
    #[error("{0}")]
    GroupKindMismatch(String),
    /// An idempotent producer's batch does not follow its last one on the
    /// partition: an earlier batch is missing. Nothing was written.
    #[error("producer {producer} sent sequence {got} where {expected} was next")]
    OutOfOrderSequence { producer: i64, expected: i32, got: i32 },
    /// A batch from an older epoch of a producer than one already seen.
    #[error("producer {producer} epoch {epoch} is older than its current epoch {current}")]
    ProducerFenced { producer: i64, epoch: i16, current: i16 },
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
