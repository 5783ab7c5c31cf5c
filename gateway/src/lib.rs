//! Shale gateway: the public `/v1` HTTP API.
//!
//! - [`api`]: the axum handlers and the JSON error shape.
//! - [`service`]: the domain operations both protocols share (append, read
//!   many partitions with a wait, offsets, groups), failing with [`service::ServiceError`].
//! - [`batcher`]: the write path — gather records of all partitions, flush
//!   one segment object per batch, commit it, then answer producers.
//! - [`hedge`]: segment PUTs raced by a second PUT when slower than recent ones.
//! - [`stages`]: a produce request's time per stage, for `/metrics` and the slow log.
//! - [`reader`]: the read path — index lookup, ranged GET of one chunk,
//!   CRC check, decode, with a bounded cache of chunks.
//! - [`auth`]: bearer tokens checked against the controller's token table.
//! - [`mirror`]: the controller's topics and partition indexes, mirrored
//!   from its feed, so produce and fetch need no controller call of their own.
//! - [`counting`]: counts every controller call for `/metrics`.
//! - [`registry`]: heartbeats that keep this gateway registered, so the
//!   controller can make it a partition leader.
//!
//! The gateway keeps no durable state: offsets come from the controller.

pub mod api;
pub mod auth;
pub mod batcher;
pub mod config;
pub mod counting;
pub mod hedge;
pub mod metrics;
pub mod mirror;
pub mod reader;
pub mod registry;
pub mod serve;
pub mod service;
pub mod stages;
pub mod state;
pub mod tls;

pub use api::router;
pub use config::GatewayConfig;
pub use metrics::GatewayMetrics;
pub use serve::serve;
pub use state::AppState;
