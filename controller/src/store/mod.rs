//! Durable storage for one controller node: the Raft log in write-ahead
//! files ([`LogStore`]) and the state machine with its snapshots ([`StateMachineStore`]),
//! and the feed of changes gateways mirror ([`feed`]).

// openraft's traits fix the error type to its (large) `StorageError`.
#![allow(clippy::result_large_err)]

pub mod bucket;
pub mod feed;
mod log_store;
mod state_machine;
mod wal;

pub use log_store::LogStore;
#[cfg(test)]
pub(crate) use state_machine::encode_snapshot;
pub use state_machine::{SNAPSHOT_FILE, SharedState, StateMachineData, StateMachineStore};

use crate::types::StorageError;
use openraft::{ErrorSubject, ErrorVerb};

/// Wraps any error as an openraft storage error on the given subject.
pub(crate) fn storage_error(
    subject: ErrorSubject<crate::types::NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests;
