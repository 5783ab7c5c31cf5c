//! The commands replicated through the controller's Raft log, and their
//! replies. Every command carries the timestamps it needs, so applying it
//! never reads a clock.

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::auth::{TokenInfo, TokenRecord};
use crate::classic::{ClassicAnswer, ClassicRequest};
use crate::group::{CommitOffsets, MemberAssignment, OffsetCommit, TopicPartition};
use crate::meta::{ChunkRef, CompactorLease, GatewayLease, MetaError, TopicConfig, TopicInfo};

/// A change to the metadata. Every command carries the timestamps it needs, so
/// applying it never reads a clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateTopic {
        name: TopicName,
        partitions: u32,
        config: TopicConfig,
        created_ms: i64,
    },
    DeleteTopic {
        name: TopicName,
    },
    /// Changes a topic's config (a JSON merge patch: fields given replace,
    /// `null` clears) and/or grows its partitions.
    UpdateTopic {
        name: TopicName,
        config: Option<serde_json::Value>,
        partitions: Option<u32>,
    },
    CommitSegment(CommitSegment),
    /// Group commit: segments applied in order, exactly as that many
    /// `CommitSegment` entries would be, so that one Raft append (one fsync)
    /// serves them all.
    CommitSegments(Vec<CommitSegment>),
    /// A gateway (by its advertised URL) registers or extends its lease.
    /// `now_ms` is the controller leader's clock.
    GatewayHeartbeat {
        url: String,
        now_ms: i64,
        lease_ms: u64,
    },
    /// Drops chunks past their topic's retention, advancing log start
    /// offsets (proposed by the controller leader with its clock).
    ApplyRetention {
        now_ms: i64,
    },
    /// Ends the gateway and compactor leases expired by `now_ms` (proposed
    /// by the controller leader).
    ExpireGateways {
        now_ms: i64,
    },
    /// A compactor (by its id) registers or extends its lease; the reply
    /// lists the partitions it may rewrite. `now_ms` is the leader's clock.
    CompactorHeartbeat {
        id: String,
        now_ms: i64,
        lease_ms: u64,
    },
    /// A compactor stopping hands its partitions over at once.
    CompactorLeave {
        id: String,
    },
    /// Swaps a range of a partition's index for one rewritten object.
    ReplaceRange(ReplaceRange),
    /// A gateway shutting down hands its partitions over at once.
    GatewayLeave {
        url: String,
    },
    /// A token for the public API; only its hash is stored.
    CreateToken(TokenRecord),
    RevokeToken {
        name: String,
    },
    /// A member joins a group or changes its subscription; the group is
    /// rebalanced. `now_ms` is the leader's clock.
    JoinGroup {
        group: String,
        member_id: String,
        topics: Vec<TopicName>,
        session_timeout_ms: u64,
        instance_id: Option<String>,
        now_ms: i64,
    },
    /// The member has acted on the answer at `epoch`: the partitions it was
    /// revoking go to their new owners.
    AckRevocation {
        group: String,
        member_id: String,
        epoch: u64,
    },
    /// Members leave (or, listed by the leader, missed their sessions); a
    /// member is removed only if its epoch is still the one named.
    LeaveGroup {
        group: String,
        members: Vec<(String, Option<u64>)>,
    },
    CommitOffsets {
        group: String,
        commit: CommitOffsets,
        now_ms: i64,
    },
    /// Sets a group's offsets (explicit, resolved by the gateway); only for
    /// a group with no members.
    ResetOffsets {
        group: String,
        offsets: Vec<OffsetCommit>,
        now_ms: i64,
    },
    DeleteGroup {
        group: String,
    },
    /// Forgets a group's committed offsets of these partitions (Kafka's
    /// OffsetDelete).
    DeleteOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    /// Moves a partition's log start up to `before` (Kafka's DeleteRecords):
    /// records below it are no longer served, and chunks wholly below it
    /// leave the index, as retention drops them.
    DeleteRecords {
        topic: TopicName,
        partition: PartitionId,
        before: Offset,
    },
    /// A request of Kafka's classic group protocol (join, the leader's
    /// sync, leave); `now_ms` is the leader's clock.
    Classic {
        group: String,
        request: ClassicRequest,
        now_ms: i64,
    },
    /// Ends the sessions of classic members the leader no longer hears
    /// from, and the rebalance rounds whose deadline passed.
    ClassicExpire {
        group: String,
        members: Vec<String>,
        now_ms: i64,
    },
}

/// A segment object already written to the store, to be committed: each chunk
/// gets the next offsets of its partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitSegment {
    /// The object's key in the bucket.
    pub object: String,
    pub committed_ms: i64,
    pub chunks: Vec<ChunkCommit>,
    /// Requests with an idempotency key or an expected offset. Their records
    /// sit in chunks of their own, so refusing one refuses nothing else.
    #[serde(default)]
    pub requests: Vec<RequestCommit>,
}

/// A produce request that must be checked as a whole when committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestCommit {
    pub idempotency_key: Option<String>,
    /// Append only if the partition's next offset is this (single partition).
    pub expected_offset: Option<Offset>,
    /// The request's records in order, as runs of (chunk index, record count).
    pub runs: Vec<(u32, u32)>,
    /// An idempotent Kafka producer's batch: its sequence is checked against
    /// the partition's last one from that producer (one partition only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<ProducerBatch>,
}

/// A Kafka record batch's producer id, epoch and sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
    pub record_count: u32,
}

impl ProducerBatch {
    /// The batch's last sequence: sequences wrap from `i32::MAX` to 0, as Kafka's do.
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.first_sequence) + i64::from(self.record_count.max(1)) - 1;
        i32::try_from(last % (i64::from(i32::MAX) + 1)).unwrap_or(0)
    }
}

/// One chunk of a segment being committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkCommit {
    pub topic: TopicName,
    /// The topic incarnation the gateway saw, so a chunk for a deleted and
    /// re-created topic is refused rather than mixed into the new one.
    pub topic_id: u64,
    pub partition: PartitionId,
    pub position: u64,
    pub len: u32,
    pub record_count: u32,
    pub max_timestamp_ms: i64,
    /// The request (index in `CommitSegment::requests`) owning this chunk.
    #[serde(default)]
    pub request: Option<u32>,
}

/// A compactor's rewrite of a partition's entries `[first_offset,
/// end_offset)` into one object (a Parquet file), swapped in whole or not at
/// all. Refused unless `compactor` holds the partition's compaction lease at
/// `epoch` and the index holds entries starting exactly at `first_offset`
/// and ending exactly at `end_offset`. Offsets never change. The leader
/// stamps `now_ms`, which becomes the new entry's `committed_ms`: the time
/// the object entered the index, which garbage collection's grace for
/// replaced objects is measured from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplaceRange {
    pub topic: TopicName,
    pub topic_id: u64,
    pub partition: PartitionId,
    pub compactor: String,
    pub epoch: u64,
    pub first_offset: Offset,
    pub end_offset: Offset,
    pub chunk: ChunkRef,
    pub now_ms: i64,
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandReply {
    /// Blank and membership entries.
    None,
    TopicCreated(TopicInfo),
    TopicDeleted,
    TopicUpdated(TopicInfo),
    /// How many chunks retention dropped.
    RetentionApplied(u64),
    /// Per chunk, in order: the base offset assigned, or why it was refused.
    Committed(Vec<Result<Offset, MetaError>>),
    /// Per segment of a group commit, in order: its chunks' outcomes.
    CommittedSegments(Vec<Vec<Result<Offset, MetaError>>>),
    Lease(GatewayLease),
    /// The gateways whose leases ended.
    GatewaysGone(Vec<String>),
    TokenCreated(TokenInfo),
    TokenRevoked,
    Compactor(CompactorLease),
    /// A range was swapped.
    Replaced,
    Member(MemberAssignment),
    /// A group command other than a join was applied.
    GroupChanged,
    Classic(ClassicAnswer),
    Failed(MetaError),
}

/// Longest a segment may wait between its PUT (the time in its key, the
/// gateway's clock) and its commit (the leader's clock). Garbage collection's
/// grace (`--gc-grace-ms`, default 10 minutes) must exceed it plus any clock
/// skew; a gateway paused longer gets its produce refused, retryably.
pub const MAX_COMMIT_DELAY_MS: i64 = 5 * 60 * 1000;
