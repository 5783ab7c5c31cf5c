//! Archiving: a run of committed segment chunks of one partition becomes one
//! Parquet file, swapped into the index in their place by one Raft command.
//! Chunks are read a few at a time and encoded as they arrive, so memory is
//! bounded by a batch, a row group and an upload part, not by the range.

use arrow_array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use shale_controller_client::{ChunkFormat, ChunkRef, ChunkSpan, ReplaceRange};
use shale_core::archive::{ArchiveWriter, BatchBuilder, archive_key, writer_properties};
use shale_core::segment::ChunkLocation;

use crate::reads::Registration;
use crate::{CompactError, Compactor, PassReport, Work};

/// Chunk reads in flight while archiving a partition, at most.
const PARALLEL_GETS: usize = 8;
/// Bytes of chunks a partition's reads hold at once (in flight, or decoded
/// and waiting for the encoder): fewer reads when chunks are large, since a
/// topic of few partitions has chunks as large as a segment. Eight reads of
/// 1 MiB chunks could hold 43 MiB, decoded, for four partitions.
const READ_AHEAD_BYTES: u64 = 4 << 20;
/// Rows handed to the encoder at a time, by payload bytes: under glibc's
/// mmap threshold (pinned at 128 KiB), so the Arrow builders' buffers are
/// reused heap memory rather than fresh pages faulted in for every batch.
const BATCH_BYTES: usize = 96 << 10;
/// Batches read ahead of the encoder (about 1.5 MiB): enough to keep it
/// busy (64 gave no more throughput, docs/BENCHMARKS.md, seventh archive
/// round), few enough that four partitions' read-ahead stays a small part
/// of the compactor's memory bound.
const BATCHES_AHEAD: usize = 16;

/// What a written file holds.
pub(crate) struct Written {
    pub len: u64,
    pub max_timestamp_ms: i64,
}

pub(crate) async fn archive(
    compactor: &Compactor,
    work: &Work<'_>,
    spans: &[ChunkSpan],
    report: &mut PassReport,
) -> Result<(), CompactError> {
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else { return Ok(()) };
    let (first_offset, end_offset) = (first.base_offset, last.end_offset());
    let (topic, partition) = (&work.topic.name, work.task.partition);
    tracing::info!(%topic, partition, first_offset, end_offset, "archiving");
    let (key, mut writer) = new_file(compactor, work, first_offset, end_offset)?;
    let written = match fill(compactor, spans, &mut writer).await {
        Ok(max_timestamp_ms) => Written { len: writer.finish().await?, max_timestamp_ms },
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    let records = end_offset - first_offset;
    swap(compactor, work, (first_offset, end_offset), key.as_ref(), &written).await?;
    report.archived_files += 1;
    report.archived_records += records;
    report.bytes_read += spans.iter().map(|s| u64::from(s.chunk.len)).sum::<u64>();
    report.bytes_written += written.len;
    tracing::info!(%topic, partition, first_offset, end_offset, bytes = written.len, "archived");
    Ok(())
}

/// The writer of the file that will hold `[first_offset, end_offset)`.
pub(crate) fn new_file(
    compactor: &Compactor,
    work: &Work<'_>,
    first_offset: u64,
    end_offset: u64,
) -> Result<(Path, ArchiveWriter), CompactError> {
    let (topic, partition) = (&work.topic.name, work.task.partition);
    let key = archive_key(topic, partition, first_offset, end_offset - 1);
    let props = writer_properties(topic, work.topic.id, partition);
    let writer = ArchiveWriter::new(compactor.store.clone(), key.clone(), props)?;
    Ok((key, writer))
}

/// Streams the chunks' records into the writer; answers the newest timestamp.
/// A task of its own reads and batches the chunks while the writer encodes
/// and uploads, [`BATCHES_AHEAD`] batches ahead at most.
async fn fill(
    compactor: &Compactor,
    spans: &[ChunkSpan],
    writer: &mut ArchiveWriter,
) -> Result<i64, CompactError> {
    let (batches, mut ready) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
    let registration = compactor.reads.register(spans);
    let reader = tokio::spawn(read_batches(registration, spans.to_vec(), batches));
    let reader = tokio_util::task::AbortOnDropHandle::new(reader);
    while let Some(batch) = ready.recv().await {
        writer.write(batch).await?;
    }
    reader.await.map_err(|e| CompactError::Invalid(format!("the chunk reader failed: {e}")))?
}

/// Reads the chunks, up to eight reads in flight ([`reads_in_flight`];
/// shared with the partitions archived meanwhile), into batches of about
/// [`BATCH_BYTES`]; answers the newest timestamp. Stops when the writer
/// hangs up.
async fn read_batches(
    registration: Registration,
    spans: Vec<ChunkSpan>,
    batches: tokio::sync::mpsc::Sender<RecordBatch>,
) -> Result<i64, CompactError> {
    let in_flight = reads_in_flight(&spans);
    let mut chunks = futures::stream::iter(spans)
        .map(|span| {
            let registration = &registration;
            async move {
                let at = ChunkLocation {
                    object: &span.chunk.object,
                    position: span.chunk.position,
                    len: span.chunk.len,
                    record_count: span.chunk.record_count,
                };
                registration.read(at).await.map(|records| (span.base_offset, records))
            }
        })
        .buffered(in_flight)
        .boxed();
    let mut batch = BatchBuilder::default();
    let mut max_timestamp_ms = i64::MIN;
    while let Some((base, records)) = chunks.try_next().await? {
        for (i, record) in records.iter().enumerate() {
            max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms);
            batch.push(base + i as u64, record);
            if batch.bytes() >= BATCH_BYTES && batches.send(batch.finish()?).await.is_err() {
                return Ok(max_timestamp_ms); // the writer failed; it reports why
            }
        }
    }
    if batch.rows() > 0 {
        // a failed send: the writer failed and reports why
        let _ = batches.send(batch.finish()?).await;
    }
    Ok(max_timestamp_ms)
}

/// Chunk reads to keep in flight for `spans`: as many of its largest chunk
/// as [`READ_AHEAD_BYTES`] holds, 1 to [`PARALLEL_GETS`].
fn reads_in_flight(spans: &[ChunkSpan]) -> usize {
    let largest = spans.iter().map(|s| u64::from(s.chunk.len)).max().unwrap_or(1).max(1);
    usize::try_from(READ_AHEAD_BYTES / largest).unwrap_or(PARALLEL_GETS).clamp(1, PARALLEL_GETS)
}

/// Swaps the written file in for `[first, end)` of the partition.
pub(crate) async fn swap(
    compactor: &Compactor,
    work: &Work<'_>,
    (first_offset, end_offset): (u64, u64),
    object: &str,
    written: &Written,
) -> Result<(), CompactError> {
    let too_big = || CompactError::Invalid(format!("{object} is {} bytes, over 4 GiB", written.len));
    let chunk = ChunkRef {
        object: object.to_owned(),
        position: 0,
        len: u32::try_from(written.len).map_err(|_| too_big())?,
        record_count: u32::try_from(end_offset - first_offset).map_err(|_| too_big())?,
        max_timestamp_ms: written.max_timestamp_ms,
        committed_ms: 0,
        format: ChunkFormat::Parquet,
    };
    let replace = ReplaceRange {
        topic: work.topic.name.clone(),
        topic_id: work.topic.id,
        partition: work.task.partition,
        compactor: compactor.config.id.clone(),
        epoch: work.task.epoch,
        first_offset,
        end_offset,
        chunk,
        now_ms: 0, // stamped by the controller leader
    };
    compactor.controller.replace_range(replace).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use shale_controller_client::ChunkFormat;

    use super::*;

    fn spans(lens: &[u32]) -> Vec<ChunkSpan> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| ChunkSpan {
                base_offset: i as u64 * 100,
                chunk: ChunkRef {
                    object: format!("segments/00/{i}.seg"),
                    position: 0,
                    len,
                    record_count: 100,
                    max_timestamp_ms: 0,
                    committed_ms: 0,
                    format: ChunkFormat::Segment,
                },
            })
            .collect()
    }

    #[test]
    fn large_chunks_are_read_fewer_at_a_time() {
        assert_eq!(reads_in_flight(&spans(&[256 << 10; 20])), PARALLEL_GETS);
        assert_eq!(reads_in_flight(&spans(&[1 << 20; 20])), 4);
        // one large chunk bounds the whole range
        assert_eq!(reads_in_flight(&spans(&[256 << 10, 2 << 20, 256 << 10])), 2);
        assert_eq!(reads_in_flight(&spans(&[4 << 20, 4 << 20])), 1);
        assert_eq!(reads_in_flight(&spans(&[8 << 20])), 1);
        assert_eq!(reads_in_flight(&spans(&[0])), PARALLEL_GETS);
        assert_eq!(reads_in_flight(&[]), PARALLEL_GETS);
    }
}
