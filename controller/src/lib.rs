//! Shale controller: a Raft-replicated (openraft) metadata service.
//!
//! It holds topics and their config, and per partition the index
//! (`base_offset → chunk ref`), log start offset and high watermark. Committing
//! a segment is one Raft entry ([`Command::CommitSegment`]) that assigns the
//! next offsets of every partition the segment touches, atomically.
//!
//! - [`types`]: the Raft type config, commands and replies.
//! - [`model`]: the pure, deterministic metadata state machine.
//! - [`store`]: the durable log store (write-ahead files) and the state machine store.
//! - [`node`]: a running controller node and its [`Controller`] API.
//!
//! The [`Controller`] trait, its HTTP client and the wire types live in
//! `shale-controller-client`, so that gateways link no Raft server.

pub mod api;
pub mod metrics;
pub mod model;
pub mod network;
pub mod node;
pub mod recovery;
pub mod status;
pub mod store;
pub mod types;

pub use model::{ChunkRef, MetaError, PartitionInfo, TopicConfig, TopicInfo};
pub use network::PeerAccess;
pub use node::{ControllerNode, NodeConfig};
pub use shale_controller_client::{ChunkSpan, Controller, ControllerError, PartitionRead, RemoteController};
pub use types::{ChunkCommit, Command, CommandReply, CommitSegment};
