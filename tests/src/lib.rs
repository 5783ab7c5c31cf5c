//! Harness for end-to-end tests: start the real `shale` binary on a port
//! chosen at run time, talk HTTP to it, kill it, and check a history of
//! acknowledged records against what the log holds.
//!
//! Every scenario runs on each [`Backend`]: the local disk always, and a real
//! S3-compatible server (Garage, started by `scripts/test.sh`) when
//! `SHALE_TEST_S3_URL` is set. Without it the S3 run prints why it is skipped.

pub mod archive;
pub mod certs;
pub mod cluster;
pub mod group;
pub mod history;
pub mod infra;
pub mod kafka;
pub mod lambda;
pub mod leader;
pub mod process;

pub use history::History;
pub use process::{Backend, Client, Process, Shale};

/// A unique name for one test run's objects (an S3 key prefix).
pub fn unique(name: &str) -> String {
    format!("{name}-{}", ulid::Ulid::new().to_string().to_lowercase())
}
