//! The record model: what a producer sends and a consumer gets back.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One record of a partition's log. Keys and values are opaque bytes; a
/// record without a value is a tombstone (Kafka's null value), which
/// compaction uses to delete its key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// The timestamp range a record may carry: its microseconds fit an i64, as
/// the archive's `TIMESTAMP(MICROS)` column stores them (about ±292 000 years).
pub const MAX_TIMESTAMP_MS: i64 = i64::MAX / 1000;
pub const MIN_TIMESTAMP_MS: i64 = i64::MIN / 1000;

/// A record header, as in Kafka: a string key and a byte value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

impl Record {
    /// Bytes of payload the record carries: key, value and headers. Used for
    /// size limits, buffer accounting and `max_bytes`.
    pub fn size(&self) -> usize {
        let key = self.key.as_ref().map_or(0, Bytes::len);
        let headers: usize = self.headers.iter().map(|h| h.key.len() + h.value.len()).sum();
        key + self.value.as_ref().map_or(0, Bytes::len) + headers
    }
}
