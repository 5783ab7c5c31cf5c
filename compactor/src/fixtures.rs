//! Index entries for the unit tests of the compactor's choices.

use shale_controller_client::{ChunkFormat, ChunkRef, ChunkSpan};

/// Archive files of the given (bytes, committed_ms), ten offsets each, back
/// to back from offset 0.
pub fn files(specs: &[(u32, i64)]) -> Vec<ChunkSpan> {
    specs
        .iter()
        .zip((0u64..).step_by(10))
        .map(|((len, committed_ms), base_offset)| ChunkSpan {
            base_offset,
            chunk: ChunkRef {
                object: format!("f{base_offset}"),
                position: 0,
                len: *len,
                record_count: 10,
                max_timestamp_ms: 0,
                committed_ms: *committed_ms,
                format: ChunkFormat::Parquet,
            },
        })
        .collect()
}
