//! The controller's HTTP API as both sides see it: one route per operation
//! (the raw Raft command is never an endpoint), the bodies they take, and
//! the cluster credential every route but `/metrics` requires.
//!
//! Writes are taken by the leader (a follower answers `NotLeader` with the
//! leader's address); reads are served by any node, since the index only grows.

use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::meta::TopicConfig;

/// Read routes (`GET`).
pub const TOPICS: &str = "/api/topics";
pub const READ: &str = "/api/read";
pub const STATUS: &str = "/api/status";
pub const GATEWAYS: &str = "/api/gateways";
/// Objects the index references (answered by the leader after a read barrier).
pub const OBJECTS: &str = "/api/objects";
/// Write routes (`POST`, `DELETE` for a topic).
pub const SEGMENTS: &str = "/api/segments";
/// Several segments committed in order as one Raft entry (group commit).
pub const SEGMENT_GROUPS: &str = "/api/segments/group";
pub const HEARTBEAT: &str = "/api/gateways/heartbeat";
pub const LEAVE: &str = "/api/gateways/leave";
pub const MEMBERS: &str = "/api/members";
/// Compactors: heartbeat (`HeartbeatRequest`, `url` being the compactor's
/// id), leave, and the swap of a rewritten range.
pub const COMPACTOR_HEARTBEAT: &str = "/api/compactors/heartbeat";
pub const COMPACTOR_LEAVE: &str = "/api/compactors/leave";
pub const RANGES: &str = "/api/ranges";
/// The first chunk at or after a time (`GET`, [`TimeQuery`]).
pub const TIME: &str = "/api/time";
/// Groups: `GET /api/groups` and `GET|DELETE /api/groups/{g}` (from the
/// leader), `POST|DELETE /api/groups/{g}/members/{m}` (heartbeat, leave),
/// `POST /api/groups/{g}/offsets` (commit), `POST /api/groups/{g}/reset`,
/// `POST /api/groups/{g}/classic` (Kafka's classic protocol).
pub const GROUPS: &str = "/api/groups";
/// The metadata feed (`GET`, [`crate::watch::WatchQuery`]).
pub const WATCH: &str = "/api/watch";
/// Tokens: `GET` (with hashes, for gateways), `POST`, `DELETE /api/tokens/{name}`.
pub const TOKENS: &str = "/api/tokens";

/// The header in which a node names itself on Raft RPCs.
pub const NODE_ID_HEADER: &str = "shale-node-id";

/// `POST /api/topics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub name: TopicName,
    pub partitions: u32,
    #[serde(default)]
    pub config: TopicConfig,
    pub created_ms: i64,
}

/// `PATCH /api/topics/{t}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateTopicRequest {
    /// A JSON merge patch of the topic's config.
    pub config: Option<serde_json::Value>,
    /// The new partition count (it can only grow).
    pub partitions: Option<u32>,
}

/// `POST /api/gateways/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub url: String,
    pub lease_ms: u64,
}

/// `POST /api/gateways/leave`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveRequest {
    pub url: String,
}

/// `GET /api/read`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadQuery {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub from: Offset,
    pub max_chunks: usize,
    pub wait_ms: u64,
    /// Answer only from the leader, after confirming it leads and has
    /// applied everything committed (a read index): read-your-writes.
    #[serde(default)]
    pub linearizable: bool,
}

/// `GET /api/time`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TimeQuery {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub timestamp_ms: i64,
}

/// A membership change, sent to the leader (`POST /api/members`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Add a node (`addr` is its `host:port`): it catches up as a learner,
    /// then votes. The leader first asks the node at `addr` who it is, so a
    /// node cannot join under another node's id.
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
}
