//! Feeds arbitrary bytes to the Kafka listener's request decoding (the
//! frame, then a produce's record batches). It must refuse, never panic or
//! abort. The test command runs the same body, bounded, on mutated real
//! requests (`kafka/src/fuzz/tests.rs`).
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run kafka_request` (see README).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shale_kafka::fuzz_request(data));
