//! Consumer groups as clients see them: what a member sends when it joins or
//! heartbeats, what it is answered (its epoch and assignment), commits, and
//! a group as described. The state itself lives in the controller.

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

/// Shortest and longest session a member may ask for, and the default.
pub const MIN_SESSION_TIMEOUT_MS: u64 = 1_000;
pub const MAX_SESSION_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_SESSION_TIMEOUT_MS: u64 = 30_000;
/// Longest group, member or instance id, and commit metadata.
pub const MAX_ID_LEN: usize = 249;
pub const MAX_METADATA_LEN: usize = 4096;
/// Most topics one member may subscribe to, and offsets one commit may carry.
pub const MAX_SUBSCRIBED_TOPICS: usize = 1_000;
pub const MAX_COMMIT_OFFSETS: usize = 10_000;

/// Whether `id` may name a group, a member or an instance: 1 to 249 of
/// `[a-zA-Z0-9._-]`, as topic names (so ids go in URLs unescaped).
pub fn validate_id(what: &str, id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(format!("{what} must be 1 to {MAX_ID_LEN} of [a-zA-Z0-9._-], got {id:?}")) }
}

/// How often a member with this session should heartbeat: a third of it,
/// at most 5 s; while a rebalance involves the member (it revokes, or
/// waits for partitions another member still holds), every 100 ms, so the
/// hand-over does not wait out whole intervals.
pub fn heartbeat_interval_ms(session_timeout_ms: u64, reconciling: bool) -> u64 {
    let steady = (session_timeout_ms / 3).min(5_000);
    if reconciling { steady.min(RECONCILING_HEARTBEAT_MS) } else { steady }
}

/// The heartbeat interval of a member in a rebalance.
pub const RECONCILING_HEARTBEAT_MS: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicPartition {
    #[schema(value_type = String)]
    pub topic: TopicName,
    #[schema(value_type = u32)]
    pub partition: PartitionId,
}

/// A join or heartbeat. `topics` absent: a heartbeat of a member that must
/// already exist (the records route sends these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHeartbeat {
    pub topics: Option<Vec<TopicName>>,
    pub session_timeout_ms: u64,
    pub instance_id: Option<String>,
    /// The epoch of the last answer the member acted on: a revocation
    /// completes when the member presents the epoch that announced it.
    /// Absent, the heartbeat acknowledges everything answered before.
    pub member_epoch: Option<u64>,
}

/// A partition assigned to a member, with the group's committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssignedPartition {
    #[schema(value_type = String)]
    pub topic: TopicName,
    #[schema(value_type = u32)]
    pub partition: PartitionId,
    /// The next offset to read as committed, if the group committed one.
    #[schema(value_type = Option<u64>)]
    pub committed_offset: Option<Offset>,
}

/// What a member is told on each join or heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberAssignment {
    pub group: String,
    pub member_id: String,
    /// Commits must carry this epoch; it changes whenever the member's
    /// assignment does.
    pub member_epoch: u64,
    pub assignment: Vec<AssignedPartition>,
    /// Partitions the member must stop reading (commit them first); they go
    /// to another member once the member heartbeats with this epoch.
    pub revoke: Vec<TopicPartition>,
    pub heartbeat_interval_ms: u64,
    pub session_timeout_ms: u64,
}

/// One offset to commit: `offset` is the next record to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetCommit {
    #[schema(value_type = String)]
    pub topic: TopicName,
    #[schema(value_type = u32)]
    pub partition: PartitionId,
    #[schema(value_type = u64)]
    pub offset: Offset,
    #[serde(default)]
    pub metadata: Option<String>,
}

/// A commit: by a member at its epoch, or (no member) for a group without
/// live members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOffsets {
    pub member: Option<(String, u64)>,
    pub offsets: Vec<OffsetCommit>,
}

/// A committed offset as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommittedOffset {
    #[schema(value_type = String)]
    pub topic: TopicName,
    #[schema(value_type = u32)]
    pub partition: PartitionId,
    #[schema(value_type = u64)]
    pub offset: Offset,
    pub metadata: Option<String>,
    pub committed_ms: i64,
}

/// A member as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub member_epoch: u64,
    #[schema(value_type = Vec<String>)]
    pub topics: Vec<TopicName>,
    pub session_timeout_ms: u64,
    pub assignment: Vec<TopicPartition>,
    pub revoking: Vec<TopicPartition>,
}

/// A group as the controller holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub group: String,
    /// Bumped at every assignment change in the group.
    pub group_epoch: u64,
    pub members: Vec<MemberInfo>,
    pub offsets: Vec<CommittedOffset>,
    /// The group's classic-protocol side, if Kafka clients of the classic
    /// protocol ever joined it.
    #[serde(default)]
    pub classic: Option<crate::classic::ClassicInfo>,
}

impl GroupInfo {
    /// Whether any member, of either protocol, is in the group.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty() || self.classic.as_ref().is_some_and(|c| !c.members.is_empty())
    }

    /// `empty` (no members), `reconciling` (a partition is being revoked or
    /// waits for its new owner) or `stable`.
    pub fn state(&self, subscribed_partitions: usize) -> &'static str {
        let assigned: usize = self.members.iter().map(|m| m.assignment.len()).sum();
        if let Some(classic) = self.classic.as_ref().filter(|c| !c.members.is_empty()) {
            return if classic.state == "Stable" { "stable" } else { "reconciling" };
        }
        if self.members.is_empty() {
            "empty"
        } else if self.members.iter().any(|m| !m.revoking.is_empty()) || assigned < subscribed_partitions {
            "reconciling"
        } else {
            "stable"
        }
    }
}
