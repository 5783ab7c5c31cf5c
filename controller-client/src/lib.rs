//! The controller as its clients see it: the [`Controller`] trait, the HTTP
//! client [`RemoteController`], and the wire types (commands, metadata,
//! status, routes). Gateways, compactors and Lambda builds link this crate,
//! never the Raft server (no openraft, no redb).
//!
//! - [`meta`]: topics, partitions, chunks, leases and the controller's errors.
//! - [`command`]: the commands replicated through the Raft log.
//! - [`api`]: the controller's HTTP routes and their bodies.
//! - [`group`]: consumer groups: joins, assignments, commits.
//! - [`classic`]: Kafka's classic group protocol (client-side assignment).
//! - [`auth`]: tokens, principals and grants on the public API.
//! - [`secret`]: the cluster credential.
//! - [`watch`]: the metadata feed gateways mirror.

pub mod api;
pub mod auth;
pub mod classic;
pub mod client;
pub mod command;
pub mod group;
pub mod meta;
pub mod remote;
pub mod secret;
pub mod status;
pub mod watch;

pub use client::{ChunkSpan, Controller, ControllerError, PartitionRead, SegmentOutcomes};
pub use command::{ChunkCommit, Command, CommandReply, CommitSegment, ReplaceRange, RequestCommit};
pub use meta::{
    ChunkFormat, ChunkRef, CleanupPolicy, CompactionTask, CompactorLease, GatewayLease, MetaError, OffsetRun,
    PartitionInfo, TopicConfig, TopicInfo,
};
pub use remote::RemoteController;
pub use secret::ClusterSecret;
