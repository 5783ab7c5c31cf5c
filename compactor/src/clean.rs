//! Cleaning a compacted topic (`cleanup_policy` `compact`): the archive
//! keeps the latest record per key, with Kafka's semantics.
//!
//! - Offsets never change: a cleaned file keeps its span in the index and
//!   holds the rows that survived, so the log becomes sparse.
//! - Only the archive is cleaned; the newest records, still in segments,
//!   are the log's head, as Kafka's active segment.
//! - A tombstone (null value) is kept until its timestamp is
//!   `delete_retention_ms` old, so consumers that catch up within that time
//!   see the delete; the first cleaning after that drops it.
//! - Records without a key (written before the policy changed) are kept.
//!
//! Only files settled past the garbage collection grace are cleaned (as
//! only those are merged): a cleaning deletes the file it replaces at once,
//! as the collector would, so queries never see a record twice for longer
//! than the delete takes. It works on the settled prefix of the archive.
//!
//! A cleaning maps each key of the files not yet cleaned ("dirty", from the
//! offset the last cleaning reached) to its latest offset, at most
//! [`MAX_KEYS`] of them (the map then ends where it filled, and the next
//! cleaning goes on from there). It then rewrites, oldest first, every file
//! before that point that holds a superseded record or an old enough
//! tombstone: copy-on-write, a new file under a new name
//! (`shale_core::archive::cleaned_key`), swapped in for the same span by
//! one Raft command, the old file deleted at once. Oldest first: a crash
//! part way never drops a tombstone while an older value of its key
//! survives.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, BinaryArray, BooleanArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use shale_controller_client::ChunkSpan;
use shale_core::Offset;
use shale_core::archive::{
    ArchiveError, ArchiveFile, ArchiveWriter, cleaned_key, column, generation, schema, writer_properties,
};

use crate::archive::{Written, swap};
use crate::{CompactError, Compactor, PassReport, Work};

/// Keys a cleaning maps at most (a 128-bit hash and an offset each, about
/// 48 MiB with the map's overhead).
pub const MAX_KEYS: usize = 1 << 20;
const BATCH_ROWS: usize = 8192;
/// Columns of the archive schema: roots for projections, and the same
/// leaves for statistics (the first four columns are flat).
const OFFSET: usize = 0;
const TIMESTAMP: usize = 1;
const KEY: usize = 2;
const VALUE: usize = 3;
const HEADERS: usize = 4;

/// What a partition's last cleaning left, kept in memory (a restarted
/// compactor cleans everything once more: correct, only slower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    /// Offsets before this were cleaned against each other.
    pub to: Offset,
    /// When the oldest tombstone kept becomes old enough to drop.
    pub tombstones_due_ms: Option<i64>,
}

/// The archive files a cleaning may work on: the prefix settled past the
/// garbage collection grace.
pub fn settled(files: &[ChunkSpan], now_ms: i64, grace_ms: u64) -> &[ChunkSpan] {
    let settled_by = now_ms.saturating_sub(i64::try_from(grace_ms).unwrap_or(i64::MAX));
    let n = files.iter().take_while(|f| f.chunk.committed_ms <= settled_by).count();
    &files[..n]
}

/// Whether the partition's archive is due for a cleaning: it was never
/// cleaned by this compactor, the files after the cleaned point make up
/// half of the archive or more (Kafka's `min.cleanable.dirty.ratio` 0.5),
/// or a kept tombstone has become old enough to drop.
pub fn due(files: &[ChunkSpan], last: Option<Cleaned>, now_ms: i64) -> bool {
    let Some(end) = files.last().map(ChunkSpan::end_offset) else { return false };
    let Some(last) = last else { return true };
    let (mut dirty, mut total) = (0u64, 0u64);
    for f in files {
        total += u64::from(f.chunk.len);
        if f.end_offset() > last.to {
            dirty += u64::from(f.chunk.len);
        }
    }
    (end > last.to && dirty * 2 >= total) || last.tombstones_due_ms.is_some_and(|t| now_ms >= t)
}

/// A key's identity in the map: a 128-bit hash, as Kafka's cleaner keeps an
/// MD5 of each key, so collisions are out of reach in practice.
fn key_hash(key: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(key)
}

fn offset_at(offsets: &Int64Array, row: usize) -> Result<Offset, CompactError> {
    u64::try_from(offsets.value(row))
        .map_err(|_| CompactError::Invalid(format!("negative offset at row {row}")))
}

/// The latest offset of each key, and where the map ends.
struct KeyMap {
    latest: HashMap<u128, Offset>,
    /// Offsets before this are mapped.
    end: Offset,
}

impl KeyMap {
    fn superseded(&self, key: &[u8], offset: Offset) -> bool {
        self.latest.get(&key_hash(key)).is_some_and(|latest| *latest > offset)
    }
}

/// Opens a file for reading batches of the given root columns; answers its
/// footer too.
async fn batches(
    compactor: &Compactor,
    file: &ChunkSpan,
    columns: &[usize],
) -> Result<(Arc<ParquetMetaData>, ParquetRecordBatchStream<ArchiveFile>), CompactError> {
    let source = ArchiveFile::new(
        compactor.store.clone(),
        Path::from(file.chunk.object.as_str()),
        u64::from(file.chunk.len),
    );
    let builder = ParquetRecordBatchStreamBuilder::new(source).await?;
    let meta = builder.metadata().clone();
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let stream = builder.with_projection(mask).with_batch_size(BATCH_ROWS).build()?;
    Ok((meta, stream))
}

/// Maps the keys of the files from `from` on, until [`MAX_KEYS`].
async fn map_keys(compactor: &Compactor, files: &[ChunkSpan], from: Offset) -> Result<KeyMap, CompactError> {
    let mut map = KeyMap { latest: HashMap::new(), end: from };
    for file in files.iter().filter(|f| f.end_offset() > from) {
        let (_, mut stream) = batches(compactor, file, &[OFFSET, KEY]).await?;
        while let Some(batch) = stream.try_next().await? {
            let (offsets, keys) =
                (column::<Int64Array>(&batch, "offset")?, column::<BinaryArray>(&batch, "key")?);
            for row in 0..batch.num_rows() {
                let offset = offset_at(offsets, row)?;
                if offset < from || keys.is_null(row) {
                    continue;
                }
                if map.latest.len() >= MAX_KEYS {
                    return Ok(map); // full: the next cleaning maps on from here
                }
                map.latest.insert(key_hash(keys.value(row)), offset);
                map.end = offset + 1;
            }
        }
        map.end = file.end_offset();
    }
    Ok(map)
}

/// What a file needs: how many of its records are superseded, and whether
/// a row group may hold a tombstone past `horizon` (from the footer's
/// statistics); plus when its youngest-looking tombstones become due.
struct Needs {
    superseded: u64,
    old_tombstones: bool,
    tombstones_due_ms: Option<i64>,
}

async fn needs(
    compactor: &Compactor,
    file: &ChunkSpan,
    map: &KeyMap,
    horizon_ms: i64,
    retention_ms: i64,
) -> Result<Needs, CompactError> {
    let (meta, mut stream) = batches(compactor, file, &[OFFSET, KEY]).await?;
    let mut needs = Needs { superseded: 0, old_tombstones: false, tombstones_due_ms: None };
    for group in meta.row_groups() {
        let stats = |leaf: usize| group.columns().get(leaf).and_then(|c| c.statistics());
        if stats(VALUE).and_then(Statistics::null_count_opt) == Some(0) {
            continue;
        }
        let oldest = match stats(TIMESTAMP) {
            Some(Statistics::Int64(s)) => s.min_opt().map(|us| us.div_euclid(1000)),
            _ => None,
        };
        match oldest {
            Some(ms) if ms >= horizon_ms => {
                let due = ms.saturating_add(retention_ms);
                needs.tombstones_due_ms = Some(needs.tombstones_due_ms.map_or(due, |d| d.min(due)));
            }
            _ => needs.old_tombstones = true,
        }
    }
    while let Some(batch) = stream.try_next().await? {
        let (offsets, keys) =
            (column::<Int64Array>(&batch, "offset")?, column::<BinaryArray>(&batch, "key")?);
        for row in 0..batch.num_rows() {
            let offset = offset_at(offsets, row)?;
            if offset < map.end && !keys.is_null(row) && map.superseded(keys.value(row), offset) {
                needs.superseded += 1;
            }
        }
    }
    Ok(needs)
}

/// Cleans the partition's archive files; answers how far it got.
pub(crate) async fn clean(
    compactor: &Compactor,
    work: &Work<'_>,
    files: &[ChunkSpan],
    last: Option<Cleaned>,
    report: &mut PassReport,
) -> Result<Cleaned, CompactError> {
    let now_ms = compactor.clock.now_ms();
    let retention_ms = i64::try_from(work.topic.config.delete_retention_ms).unwrap_or(i64::MAX);
    let horizon_ms = now_ms.saturating_sub(retention_ms);
    let map = map_keys(compactor, files, last.map_or(0, |c| c.to)).await?;
    let mut tombstones_due_ms: Option<i64> = None;
    let mut keep_earliest = |due: Option<i64>| {
        if let Some(due) = due {
            tombstones_due_ms = Some(tombstones_due_ms.map_or(due, |d| d.min(due)));
        }
    };
    for file in files.iter().filter(|f| f.base_offset < map.end) {
        let needs = needs(compactor, file, &map, horizon_ms, retention_ms).await?;
        keep_earliest(needs.tombstones_due_ms);
        if needs.superseded == 0 && !needs.old_tombstones {
            continue;
        }
        let rewrite = Rewrite { compactor, work, file, map: &map, horizon_ms, retention_ms };
        keep_earliest(rewrite.run(report).await?);
    }
    Ok(Cleaned { to: map.end, tombstones_due_ms })
}

struct Rewrite<'a> {
    compactor: &'a Compactor,
    work: &'a Work<'a>,
    file: &'a ChunkSpan,
    map: &'a KeyMap,
    horizon_ms: i64,
    retention_ms: i64,
}

/// What filtering a file kept.
#[derive(Default)]
struct Kept {
    dropped: u64,
    max_timestamp_ms: Option<i64>,
    tombstones_due_ms: Option<i64>,
}

impl Rewrite<'_> {
    /// Rewrites the file without its dropped rows and swaps it in; answers
    /// when its kept tombstones become due.
    async fn run(&self, report: &mut PassReport) -> Result<Option<i64>, CompactError> {
        let (topic, partition) = (&self.work.topic.name, self.work.task.partition);
        let (first, end) = (self.file.base_offset, self.file.end_offset());
        let old = self.file.chunk.object.as_str();
        let key = cleaned_key(topic, partition, first, end - 1, generation(old) + 1);
        let props = writer_properties(topic, self.work.topic.id, partition);
        let mut writer = ArchiveWriter::new(self.compactor.store.clone(), key.clone(), props)?;
        let kept = match self.filter(&mut writer).await {
            Ok(kept) if kept.dropped > 0 => kept,
            Ok(kept) => {
                // the statistics promised old tombstones that are not there
                writer.abort().await;
                return Ok(kept.tombstones_due_ms);
            }
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        let len = writer.finish().await?;
        let max_timestamp_ms = kept.max_timestamp_ms.unwrap_or(self.file.chunk.max_timestamp_ms);
        swap(self.compactor, self.work, (first, end), key.as_ref(), &Written { len, max_timestamp_ms })
            .await?;
        match self.compactor.store.delete(&Path::from(old)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(object = %old, error = %e, "cannot delete a cleaned file"),
        }
        report.cleaned_files += 1;
        report.cleaned_records += kept.dropped;
        report.bytes_read += u64::from(self.file.chunk.len);
        report.bytes_written += len;
        tracing::info!(%topic, partition, first, end, dropped = kept.dropped, bytes = len, "cleaned");
        Ok(kept.tombstones_due_ms)
    }

    async fn filter(&self, writer: &mut ArchiveWriter) -> Result<Kept, CompactError> {
        let (_, mut stream) =
            batches(self.compactor, self.file, &[OFFSET, TIMESTAMP, KEY, VALUE, HEADERS]).await?;
        let mut kept = Kept::default();
        while let Some(batch) = stream.try_next().await? {
            let offsets = column::<Int64Array>(&batch, "offset")?;
            let timestamps = column::<TimestampMicrosecondArray>(&batch, "timestamp")?;
            let keys = column::<BinaryArray>(&batch, "key")?;
            let values = column::<BinaryArray>(&batch, "value")?;
            let mut mask = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let offset = offset_at(offsets, row)?;
                let timestamp_ms = timestamps.value(row).div_euclid(1000);
                let keyed = !keys.is_null(row) && offset < self.map.end;
                let superseded = keyed && self.map.superseded(keys.value(row), offset);
                let tombstone = values.is_null(row);
                let expired = tombstone && keyed && timestamp_ms < self.horizon_ms;
                let keep = !superseded && !expired;
                if keep {
                    kept.max_timestamp_ms =
                        Some(kept.max_timestamp_ms.map_or(timestamp_ms, |m| m.max(timestamp_ms)));
                    if tombstone {
                        let due = timestamp_ms.saturating_add(self.retention_ms);
                        kept.tombstones_due_ms = Some(kept.tombstones_due_ms.map_or(due, |d| d.min(due)));
                    }
                } else {
                    kept.dropped += 1;
                }
                mask.push(keep);
            }
            let batch = arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(mask))
                .map_err(ArchiveError::from)?;
            if batch.num_rows() > 0 {
                // the file's own schema, checked against the archive's
                let batch =
                    RecordBatch::try_new(schema(), batch.columns().to_vec()).map_err(ArchiveError::from)?;
                writer.write(batch).await?;
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests;
