//! The Raft type config. The commands replicated through the log are wire
//! types of the client crate ([`shale_controller_client::command`]).

use std::io::Cursor;

pub use shale_controller_client::command::{
    ChunkCommit, Command, CommandReply, CommitSegment, ReplaceRange, RequestCommit,
};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Shale's Raft types.
    pub TypeConfig:
        D = Command,
        R = CommandReply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
