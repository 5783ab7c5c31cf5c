//! What a partition's index holds for the compactor: its archive files (a
//! prefix of the index: archiving always takes the oldest segment chunks),
//! and the segment chunks due for the archive.
//!
//! A range is due once its oldest chunk was committed `archive_after_ms`
//! ago; the file then takes every chunk committed at least half that long
//! ago. So a record is archived within about `archive_after_ms` of its
//! commit, and an active partition gets a file per half period, not one per
//! pass.

use shale_controller_client::{ChunkFormat, ChunkSpan, Controller, ControllerError, TopicInfo};
use shale_core::PartitionId;

use crate::CompactorConfig;

/// Index entries read per request.
const PAGE: usize = 1024;

#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<ChunkSpan>,
    pub archivable: Vec<ChunkSpan>,
}

pub async fn partition(
    controller: &dyn Controller,
    topic: &TopicInfo,
    partition: PartitionId,
    now_ms: i64,
    config: &CompactorConfig,
) -> Result<Scan, ControllerError> {
    let after = i64::try_from(topic.config.archive_after_ms).unwrap_or(i64::MAX);
    let (due, with_it) = (now_ms.saturating_sub(after), now_ms.saturating_sub(after / 2));
    let mut scan = Scan::default();
    let mut bytes = 0u64;
    let mut from = 0;
    loop {
        let read =
            controller.read_partition(&topic.name, partition, from, PAGE, std::time::Duration::ZERO).await?;
        let Some(last) = read.chunks.last() else { return Ok(scan) };
        from = last.end_offset();
        for span in read.chunks {
            match span.chunk.format {
                ChunkFormat::Parquet if scan.archivable.is_empty() => scan.files.push(span),
                // archive files come first; one after a segment chunk ends the run
                ChunkFormat::Parquet => return Ok(scan),
                ChunkFormat::Segment => {
                    let limit = if scan.archivable.is_empty() { due } else { with_it };
                    if span.chunk.committed_ms > limit || bytes >= config.max_archive_bytes {
                        return Ok(scan);
                    }
                    bytes += u64::from(span.chunk.len);
                    scan.archivable.push(span);
                }
            }
        }
        if from >= read.high_watermark {
            return Ok(scan);
        }
    }
}
