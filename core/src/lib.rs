//! Shale core: the pieces every other crate shares.
//!
//! Names and ids ([`names`]), the record model ([`record`]), the segment object
//! format ([`segment`]), the Parquet archive format ([`archive`]), the object-key layout ([`keys`]), object-store
//! construction and its wrappers ([`store`]), Kafka's key partitioner
//! ([`partitioner`]), the binary produce body ([`wire`]) and the one table of
//! error codes ([`error`]). See `docs/ARCHITECTURE.md` for how they fit.

pub mod archive;
pub mod clock;
pub mod error;
pub mod keys;
pub mod names;
pub mod partitioner;
pub mod record;
pub mod segment;
pub mod store;
mod varint;
pub mod wire;

pub use clock::{Clock, SystemClock};
pub use error::ErrorCode;
pub use names::{Offset, PartitionId, TopicName};
pub use record::{Header, Record};
