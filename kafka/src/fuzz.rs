//! The fuzz target's body: bytes from the network through every decoder a
//! request meets before a handler (the frame, then a produce's record
//! batches). Run by `fuzz/fuzz_targets/kafka_request.rs` under libFuzzer,
//! and, bounded, by this crate's tests on mutated real requests.

use bytes::Bytes;

use crate::records::decode_batches;
use crate::requests::{Decoded, Request, decode_frame};

/// Decodes `data` as a request frame, and a produce's batches; must never panic.
pub fn request(data: &[u8]) {
    if let Decoded::Request { request, .. } = decode_frame(Bytes::copy_from_slice(data))
        && let Request::Produce(produce) = *request
    {
        for topic in produce.topic_data {
            for partition in topic.partition_data {
                let _ = decode_batches(partition.records.unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests;
