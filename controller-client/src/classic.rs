//! Kafka's classic group protocol as the controller serves it: members
//! join, the group elects a leader and hands it every member's protocol
//! metadata, and the leader's assignment is relayed to each member as
//! opaque bytes. So any client-side assignor works (range, sticky,
//! cooperative-sticky, Kafka Streams', Kafka Connect's), and the state lives
//! in the controller, so any gateway coordinates any group.
//!
//! The gateway's Kafka listener translates JoinGroup, SyncGroup, Heartbeat
//! and LeaveGroup into [`ClassicRequest`]s; a join or sync that must wait
//! for the other members is answered [`ClassicAnswer::Pending`] and asked
//! again, so no call to the controller is held longer than a few seconds.

use serde::{Deserialize, Serialize};

/// Kafka's `group.initial.rebalance.delay.ms` default: the first
/// rebalance of an empty group waits this long for more members to join.
pub const INITIAL_REBALANCE_DELAY_MS: u64 = 3_000;
/// Shortest and longest rebalance timeout accepted.
pub const MIN_REBALANCE_TIMEOUT_MS: u64 = 1_000;
pub const MAX_REBALANCE_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Most protocols a member may offer, and bytes of metadata or assignment
/// one member may carry.
pub const MAX_PROTOCOLS: usize = 16;
pub const MAX_MEMBER_BYTES: usize = 1 << 20;
/// Most members in a classic group.
pub const MAX_MEMBERS: usize = 1_000;

/// One protocol a member offers (an assignor), with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicProtocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

/// A JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicJoin {
    pub member_id: String,
    /// The gateway minted `member_id` because the client sent none.
    pub fresh: bool,
    pub instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<ClassicProtocol>,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub client_id: String,
    pub client_host: String,
}

/// A SyncGroup; the leader's carries every member's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicSync {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// A request of the classic protocol for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassicRequest {
    Join(ClassicJoin),
    Sync(ClassicSync),
    Heartbeat {
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
    },
    /// Members leave, by member id (or, empty, by instance id).
    Leave {
        members: Vec<(String, Option<String>)>,
    },
}

/// A member as the leader sees it in its join answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberMeta {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

/// Why a classic request was refused, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassicError {
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    /// The protocol type differs from the group's, no protocol is common to
    /// every member, or the group has server-side (HTTP or KIP-848) members.
    InconsistentGroupProtocol,
    /// A static member's instance id is now held by a newer member id.
    FencedInstanceId,
    InvalidSessionTimeout,
    GroupMaxSizeReached,
    InvalidRequest,
}

/// The answer to a [`ClassicRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClassicAnswer {
    /// The rebalance is not done yet: ask again.
    Pending,
    Joined {
        generation: i32,
        protocol_type: String,
        protocol: String,
        leader: String,
        member_id: String,
        /// Every member with its metadata for the chosen protocol; only the
        /// leader gets them.
        members: Vec<ClassicMemberMeta>,
    },
    Synced {
        protocol_type: String,
        protocol: String,
        assignment: Vec<u8>,
    },
    Done,
    /// Per member of a Leave, in order: None if it left.
    Left(Vec<Option<ClassicError>>),
    Refused(ClassicError),
}

/// A member of a classic group as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicMemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the group's protocol.
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A classic group as described (Kafka's DescribeGroups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicInfo {
    pub protocol_type: String,
    pub protocol: String,
    /// Kafka's names: `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable`.
    pub state: String,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: Vec<ClassicMemberInfo>,
}
