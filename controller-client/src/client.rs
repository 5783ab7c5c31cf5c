//! The controller API the gateway (and `shale dev`) uses: served in process
//! by the controller node, or over HTTP by [`crate::RemoteController`].

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::auth::{TokenInfo, TokenRecord};
use crate::command::{CommitSegment, ReplaceRange};
use crate::group::{
    CommitOffsets, GroupInfo, MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition,
};
use crate::meta::{ChunkRef, CompactorLease, GatewayLease, MetaError, TopicConfig, TopicInfo};
use crate::watch::WatchAnswer;

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Nothing was committed; the request may be retried.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
    /// This node is not the leader; nothing was committed. `leader` is the
    /// leader's address when known.
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    /// The command was proposed but its fate is not known.
    #[error("controller outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// A committed chunk and the offset of its first record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSpan {
    pub base_offset: Offset,
    pub chunk: ChunkRef,
}

impl ChunkSpan {
    /// One past the offset of the chunk's last record.
    pub fn end_offset(&self) -> Offset {
        self.base_offset + u64::from(self.chunk.record_count)
    }
}

/// What a reader needs to serve a fetch from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRead {
    pub log_start_offset: Offset,
    pub high_watermark: Offset,
    /// The chunk holding the asked offset, then the ones after it.
    pub chunks: Vec<ChunkSpan>,
}

/// Per chunk of a committed segment, in order: the base offset it was given,
/// or why it was refused.
pub type SegmentOutcomes = Vec<Result<Offset, MetaError>>;

#[async_trait]
pub trait Controller: Send + Sync + 'static {
    async fn list_topics(&self) -> Result<Vec<TopicInfo>, ControllerError>;

    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo, ControllerError>;

    /// The chunks holding `from` and after (at most `max_chunks`). When `from`
    /// is at the high watermark, waits up to `wait` for a commit to pass it.
    async fn read_partition(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        from: Offset,
        max_chunks: usize,
        wait: Duration,
    ) -> Result<PartitionRead, ControllerError>;

    /// Whether the controller can take writes now (it knows a leader).
    async fn is_ready(&self) -> bool;

    async fn create_topic(
        &self,
        name: TopicName,
        partitions: u32,
        config: TopicConfig,
        created_ms: i64,
    ) -> Result<TopicInfo, ControllerError>;

    async fn delete_topic(&self, name: TopicName) -> Result<(), ControllerError>;

    /// Merges `config` (a JSON merge patch) into the topic's config and grows
    /// it to `partitions`; either may be absent.
    async fn update_topic(
        &self,
        name: TopicName,
        config: Option<serde_json::Value>,
        partitions: Option<u32>,
    ) -> Result<TopicInfo, ControllerError>;

    /// Commits segments already in the store, in order, as one Raft entry
    /// (group commit): per segment, its chunks' outcomes.
    async fn commit_segments(
        &self,
        commits: Vec<CommitSegment>,
    ) -> Result<Vec<SegmentOutcomes>, ControllerError>;

    /// Commits one segment already in the store.
    async fn commit_segment(&self, commit: CommitSegment) -> Result<SegmentOutcomes, ControllerError> {
        let mut outcomes = self.commit_segments(vec![commit]).await?;
        match (outcomes.pop(), outcomes.is_empty()) {
            (Some(outcome), true) => Ok(outcome),
            _ => Err(ControllerError::OutcomeUnknown("the commit reply does not match the request".into())),
        }
    }

    /// Registers the gateway at `url` or extends its lease by `lease_ms`. The
    /// node that proposes the heartbeat (the leader) stamps its time.
    async fn heartbeat(&self, url: &str, lease_ms: u64) -> Result<GatewayLease, ControllerError>;

    /// Ends the lease of the gateway at `url`, handing its partitions over.
    async fn leave(&self, url: &str) -> Result<(), ControllerError>;

    /// Every token with its hash (gateways verify tokens against these).
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, ControllerError>;

    async fn create_token(&self, token: TokenRecord) -> Result<TokenInfo, ControllerError>;

    async fn revoke_token(&self, name: &str) -> Result<(), ControllerError>;

    /// Registers the compactor `id` or extends its lease; answers the
    /// partitions it may rewrite, each with its lease epoch.
    async fn compactor_heartbeat(&self, id: &str, lease_ms: u64) -> Result<CompactorLease, ControllerError>;

    /// Ends the compactor's lease, handing its partitions over.
    async fn compactor_leave(&self, id: &str) -> Result<(), ControllerError>;

    /// Swaps a rewritten range into a partition's index (see [`ReplaceRange`]).
    async fn replace_range(&self, replace: ReplaceRange) -> Result<(), ControllerError>;

    /// Every object some index entry references, as the leader has applied
    /// them after a read barrier: garbage collection deletes only objects
    /// outside this set.
    async fn referenced_objects(&self) -> Result<Vec<String>, ControllerError>;

    /// The first chunk holding a record with a timestamp at or after
    /// `timestamp_ms` (none if no record is that recent), with the
    /// partition's bounds.
    async fn find_time(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        timestamp_ms: i64,
    ) -> Result<PartitionRead, ControllerError>;

    /// Joins `group` or heartbeats in it. A heartbeat that changes nothing
    /// is answered by the leader without a Raft entry.
    async fn group_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        heartbeat: MemberHeartbeat,
    ) -> Result<MemberAssignment, ControllerError>;

    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), ControllerError>;

    /// A request of Kafka's classic group protocol. A join or sync that
    /// waits for other members answers `Pending` within a few seconds; ask
    /// again. Heartbeats, and joins and syncs that change nothing, cost no
    /// Raft entry.
    async fn classic_group(
        &self,
        group: &str,
        request: crate::classic::ClassicRequest,
    ) -> Result<crate::classic::ClassicAnswer, ControllerError>;

    async fn commit_offsets(&self, group: &str, commit: CommitOffsets) -> Result<(), ControllerError>;

    /// Sets the offsets of a group without members.
    async fn reset_offsets(&self, group: &str, offsets: Vec<OffsetCommit>) -> Result<(), ControllerError>;

    async fn delete_group(&self, group: &str) -> Result<(), ControllerError>;

    /// Forgets a group's committed offsets of these partitions.
    async fn delete_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<(), ControllerError>;

    /// Moves the partition's log start up to `before` (at most its high
    /// watermark); answers the topic as it is then.
    async fn delete_records(
        &self,
        topic: &TopicName,
        partition: PartitionId,
        before: Offset,
    ) -> Result<TopicInfo, ControllerError>;

    /// Every group, as the leader has applied them.
    async fn list_groups(&self) -> Result<Vec<GroupInfo>, ControllerError>;

    async fn describe_group(&self, group: &str) -> Result<GroupInfo, ControllerError>;

    /// The metadata feed: the whole state (`since` absent, or too far
    /// behind), or the changes after `since`, waiting up to `wait` for one.
    async fn watch(&self, since: Option<u64>, wait: Duration) -> Result<WatchAnswer, ControllerError>;
}

/// Turning command replies into API results (for the node that applies them).
pub mod replies {
    use super::{ControllerError, SegmentOutcomes};
    use crate::command::CommandReply;
    use crate::meta::{GatewayLease, TopicInfo};

    fn unexpected(reply: CommandReply) -> ControllerError {
        ControllerError::OutcomeUnknown(format!("unexpected reply {reply:?}"))
    }

    pub fn topic_created(reply: CommandReply) -> Result<TopicInfo, ControllerError> {
        match reply {
            CommandReply::TopicCreated(info) => Ok(info),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn topic_updated(reply: CommandReply) -> Result<TopicInfo, ControllerError> {
        match reply {
            CommandReply::TopicUpdated(info) => Ok(info),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn topic_deleted(reply: CommandReply) -> Result<(), ControllerError> {
        match reply {
            CommandReply::TopicDeleted => Ok(()),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn committed(reply: CommandReply) -> Result<Vec<SegmentOutcomes>, ControllerError> {
        match reply {
            CommandReply::Committed(outcomes) => Ok(vec![outcomes]),
            CommandReply::CommittedSegments(outcomes) => Ok(outcomes),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn lease(reply: CommandReply) -> Result<GatewayLease, ControllerError> {
        match reply {
            CommandReply::Lease(lease) => Ok(lease),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn token_created(reply: CommandReply) -> Result<crate::auth::TokenInfo, ControllerError> {
        match reply {
            CommandReply::TokenCreated(info) => Ok(info),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn token_revoked(reply: CommandReply) -> Result<(), ControllerError> {
        match reply {
            CommandReply::TokenRevoked => Ok(()),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn compactor(reply: CommandReply) -> Result<crate::meta::CompactorLease, ControllerError> {
        match reply {
            CommandReply::Compactor(lease) => Ok(lease),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn replaced(reply: CommandReply) -> Result<(), ControllerError> {
        match reply {
            CommandReply::Replaced => Ok(()),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn member(reply: CommandReply) -> Result<crate::group::MemberAssignment, ControllerError> {
        match reply {
            CommandReply::Member(assignment) => Ok(assignment),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn classic(reply: CommandReply) -> Result<crate::classic::ClassicAnswer, ControllerError> {
        match reply {
            CommandReply::Classic(answer) => Ok(answer),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn group_changed(reply: CommandReply) -> Result<(), ControllerError> {
        match reply {
            CommandReply::GroupChanged | CommandReply::Member(_) => Ok(()),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }

    pub fn gone(reply: CommandReply) -> Result<(), ControllerError> {
        match reply {
            CommandReply::GatewaysGone(_) => Ok(()),
            CommandReply::Failed(e) => Err(e.into()),
            other => Err(unexpected(other)),
        }
    }
}
