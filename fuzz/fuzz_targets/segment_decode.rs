//! Feeds arbitrary bytes to every decoder of bytes from storage or the
//! network. Each must return an error, never panic.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run segment_decode` (see README).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shale_core::{segment, wire};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(chunks) = segment::decode_segment(&bytes) {
        for (entry, records) in chunks {
            assert_eq!(entry.record_count as usize, records.len());
        }
    }
    let _ = segment::decode_chunk(bytes.clone());
    let _ = wire::decode(bytes.clone());
    let _ = wire::decode_fetch(bytes);
});
