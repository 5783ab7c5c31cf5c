//! Merging: consecutive small archive files of a partition become one large
//! file, swapped in by one Raft command like an archive, so a partition
//! keeps few files per day.
//!
//! A group of files is merged when together they reach half the target
//! size, when their day (of entering the index, UTC) is over, or when there
//! are [`MAX_SMALL_FILES`] of them. Files of half the target or more are
//! never merged again, so at volume each byte is rewritten once by a merge.
//! Only files older than the garbage collection grace are merged: once the
//! merged file is swapped in, they are deleted at once, as GC would, so
//! queries never see a record twice for longer than the delete takes.

use arrow_array::{Array, Int64Array, RecordBatch};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use shale_controller_client::ChunkSpan;
use shale_core::archive::{ArchiveError, ArchiveFile, ArchiveWriter, column, schema};

use crate::archive::{Written, new_file, swap};
use crate::{CompactError, Compactor, CompactorConfig, PassReport, Work};

/// A group of this many small files is merged whatever its size.
pub const MAX_SMALL_FILES: usize = 48;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const BATCH_ROWS: usize = 8192;

/// The first group of files due for a merge, if any.
pub fn choose(files: &[ChunkSpan], now_ms: i64, config: &CompactorConfig) -> Option<Vec<ChunkSpan>> {
    let target = config.merge_target_bytes;
    let settled_by = now_ms.saturating_sub(i64::try_from(config.gc_grace_ms).unwrap_or(i64::MAX));
    let mergeable = |f: &ChunkSpan| u64::from(f.chunk.len) < target / 2 && f.chunk.committed_ms <= settled_by;
    let day = |f: &ChunkSpan| f.chunk.committed_ms.div_euclid(DAY_MS);
    let today = now_ms.div_euclid(DAY_MS);
    let due = |group: &[ChunkSpan], bytes: u64| {
        group.len() >= 2
            && (bytes >= target / 2
                || group.first().is_some_and(|f| day(f) < today)
                || group.len() >= MAX_SMALL_FILES)
    };
    let mut group: Vec<ChunkSpan> = Vec::new();
    let mut bytes = 0u64;
    for file in files {
        let joins = mergeable(file)
            && group.last().is_some_and(|g| day(g) == day(file))
            && bytes + u64::from(file.chunk.len) <= target;
        if !joins {
            if due(&group, bytes) {
                return Some(group);
            }
            group.clear();
            bytes = 0;
            if !mergeable(file) {
                continue;
            }
        }
        bytes += u64::from(file.chunk.len);
        group.push(file.clone());
    }
    due(&group, bytes).then_some(group)
}

pub(crate) async fn merge(
    compactor: &Compactor,
    work: &Work<'_>,
    files: Vec<ChunkSpan>,
    report: &mut PassReport,
) -> Result<(), CompactError> {
    let (Some(first), Some(last)) = (files.first(), files.last()) else { return Ok(()) };
    let (first_offset, end_offset) = (first.base_offset, last.end_offset());
    let (topic, partition) = (&work.topic.name, work.task.partition);
    let (key, mut writer) = new_file(compactor, work, first_offset, end_offset)?;
    let len = match copy(compactor, &files, &mut writer).await {
        Ok(()) => writer.finish().await?,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    let max_timestamp_ms = files.iter().map(|f| f.chunk.max_timestamp_ms).max().unwrap_or(i64::MIN);
    swap(compactor, work, (first_offset, end_offset), key.as_ref(), &Written { len, max_timestamp_ms })
        .await?;
    for file in &files {
        match compactor.store.delete(&Path::from(file.chunk.object.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(object = %file.chunk.object, error = %e, "cannot delete a merged file"),
        }
    }
    report.merged_files += 1;
    report.merged_inputs += files.len() as u64;
    report.bytes_read += files.iter().map(|f| u64::from(f.chunk.len)).sum::<u64>();
    report.bytes_written += len;
    tracing::info!(%topic, partition, first_offset, end_offset, files = files.len(), bytes = len, "merged");
    Ok(())
}

/// Copies every file's rows, in order, checking that each file's offsets
/// rise within its span (a compacted topic's files have gaps).
async fn copy(
    compactor: &Compactor,
    files: &[ChunkSpan],
    writer: &mut ArchiveWriter,
) -> Result<(), CompactError> {
    for file in files {
        let object = &file.chunk.object;
        let source =
            ArchiveFile::new(compactor.store.clone(), Path::from(object.as_str()), u64::from(file.chunk.len));
        let mut batches =
            ParquetRecordBatchStreamBuilder::new(source).await?.with_batch_size(BATCH_ROWS).build()?;
        let mut floor = i64::try_from(file.base_offset).unwrap_or(i64::MAX);
        let end = i64::try_from(file.end_offset()).unwrap_or(i64::MAX);
        while let Some(batch) = batches.try_next().await? {
            let offsets = column::<Int64Array>(&batch, "offset")?;
            for &offset in offsets.values() {
                if offsets.null_count() > 0 || offset < floor || offset >= end {
                    return Err(CompactError::Invalid(format!(
                        "{object}: offset {offset} is out of order or outside [{}, {})",
                        file.base_offset,
                        file.end_offset()
                    )));
                }
                floor = offset + 1;
            }
            // the file's own schema, checked against the archive's
            writer
                .write(RecordBatch::try_new(schema(), batch.columns().to_vec()).map_err(ArchiveError::from)?)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
