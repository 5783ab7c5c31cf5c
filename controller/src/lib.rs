//! Shale controller: a Raft-replicated (openraft) metadata service.
//!
//! It holds topics and their config, and per partition the index
//! (`base_offset → chunk ref`), log start offset and high watermark. Committing
//! a segment is one Raft entry ([`Command::CommitSegment`]) that assigns the
//! next offsets of every partition the segment touches, atomically.
//!
//! - [`types`]: the Raft type config, commands and replies.
//! - [`model`]: the pure, deterministic metadata state machine.
//! - [`store`]: the durable log store (redb) and the state machine store.
//! - [`node`]: a running controller node and its [`Controller`] API.
//! - [`client`]: the [`Controller`] trait the gateway talks to.

pub mod api;
pub mod client;
pub mod metrics;
pub mod model;
pub mod network;
pub mod node;
pub mod recovery;
pub mod remote;
pub mod status;
pub mod store;
pub mod types;

pub use client::{ChunkSpan, Controller, ControllerError, PartitionRead};
pub use model::{ChunkRef, MetaError, PartitionInfo, TopicConfig, TopicInfo};
pub use node::{ControllerNode, NodeConfig};
pub use types::{ChunkCommit, Command, CommandReply, CommitSegment};
