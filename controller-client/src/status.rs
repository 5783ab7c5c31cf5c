//! What a node knows of the cluster, for `GET /api/status` and `/metrics`:
//! on the leader, how far each member's log matches its own, so an operator
//! sees a follower that is not catching up.

use serde::{Deserialize, Serialize};

/// A controller node id.
pub type NodeId = u64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: Option<u64>,
    /// The last index of this node's log.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Every member of the cluster, voters and learners.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    /// On the leader: the last log index known to match the leader's.
    pub matched: Option<u64>,
    /// On the leader: entries this member is behind.
    pub lag: Option<u64>,
}

impl Status {
    /// Whether this node says it leads.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.id)
    }
}
