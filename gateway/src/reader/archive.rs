//! Reading archived ranges: an index entry of format Parquet is one file of
//! the partition's archive (`shale_core::archive`). Its footer is read once
//! (one ranged GET of its tail when the footer fits 64 KiB) and
//! cached with its page index; a fetch then reads the row group holding its
//! offset (from the page holding the offset, when that is not the group's
//! first), and decodes it into records.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::errors::ParquetError;
use parquet::file::statistics::Statistics;
use shale_controller_client::ChunkSpan;
use shale_core::archive::{ArchiveFile, PrefetchedRowGroup, decode_batch, decode_batch_rows};
use tokio::sync::Semaphore;

use super::{Loaded, Piece, ReadError, Source};

/// Footers of archive files, by object key.
pub type FooterCache = quick_cache::sync::Cache<String, ArrowReaderMetadata>;

/// Footers kept: each is a few KiB per row group.
const FOOTERS: usize = 4096;

pub fn footer_cache() -> FooterCache {
    FooterCache::new(FOOTERS)
}

/// What a failed Parquet read means for the fetch: the file is gone (read
/// the index again), the store failed (retryable), or the bytes are bad.
fn read_error(object: &str, e: ParquetError) -> ReadError {
    if let ParquetError::External(inner) = &e
        && let Some(store) = inner.downcast_ref::<object_store::Error>()
    {
        return match store {
            object_store::Error::NotFound { .. } => ReadError::Gone(object.to_owned()),
            other => ReadError::Storage(other.to_string()),
        };
    }
    ReadError::Corrupt { object: object.to_owned(), position: 0, reason: e.to_string() }
}

fn reader(store: &Arc<dyn ObjectStore>, object: &str, file_len: u64) -> ArchiveFile {
    ArchiveFile::new(store.clone(), Path::from(object), file_len).with_page_index()
}

async fn footer(
    store: &Arc<dyn ObjectStore>,
    cache: &FooterCache,
    object: &str,
    file_len: u64,
) -> Result<ArrowReaderMetadata, ReadError> {
    if let Some(meta) = cache.get(object) {
        return Ok(meta);
    }
    let mut file = reader(store, object, file_len);
    let meta = ArrowReaderMetadata::load_async(&mut file, ArrowReaderOptions::new())
        .await
        .map_err(|e| read_error(object, e))?;
    cache.insert(object.to_owned(), meta.clone());
    Ok(meta)
}

/// The file's row groups as pieces, in offset order. Each covers the
/// offsets from its first row's (the `offset` column's minimum) to the next
/// group's, so the gaps of a compacted file belong to a piece too.
pub async fn row_groups(
    store: &Arc<dyn ObjectStore>,
    cache: &FooterCache,
    span: &ChunkSpan,
    from: u64,
) -> Result<Vec<Piece>, ReadError> {
    let object = &span.chunk.object;
    let file_len = u64::from(span.chunk.len);
    let corrupt = |reason: String| ReadError::Corrupt { object: object.clone(), position: 0, reason };
    let meta = footer(store, cache, object, file_len).await?;
    let groups = meta.metadata().row_groups();
    let mut starts = Vec::with_capacity(groups.len());
    for (index, group) in groups.iter().enumerate() {
        let first = match group.columns().first().and_then(|c| c.statistics()) {
            Some(Statistics::Int64(s)) => s.min_opt().and_then(|o| u64::try_from(*o).ok()),
            _ => None,
        };
        let first = first.ok_or_else(|| corrupt(format!("row group {index} has no offset statistics")))?;
        let after_previous = starts.last().is_none_or(|p| first > *p);
        if !after_previous || first < span.base_offset || first >= span.end_offset() {
            return Err(corrupt(format!(
                "row group {index} starts at offset {first}, outside [{}, {}) or out of order",
                span.base_offset,
                span.end_offset()
            )));
        }
        starts.push(first);
    }
    let pieces = groups
        .iter()
        .enumerate()
        .map(|(index, group)| {
            let (base_offset, end_offset) = (
                if index == 0 { span.base_offset } else { starts[index] },
                starts.get(index + 1).copied().unwrap_or(span.end_offset()),
            );
            // a read from inside a dense row group starts at the page holding
            // `from`, found in the page index: it reads those pages only
            let rows = u64::try_from(group.num_rows()).unwrap_or(0);
            let dense = end_offset - base_offset == rows;
            let skip_rows = if dense && from > base_offset && from < end_offset {
                PrefetchedRowGroup::page_start(meta.metadata(), index, 0, from - base_offset)
            } else {
                0
            };
            Piece {
                base_offset,
                end_offset,
                bytes: u64::try_from(group.compressed_size()).unwrap_or(0),
                source: Source::RowGroup { object: object.clone(), file_len, index, skip_rows },
            }
        })
        .collect();
    Ok(pieces)
}

/// The records of a row group's batches and their offsets, checking that
/// the offsets rise within `[base, end)`.
async fn decode(
    mut stream: ParquetRecordBatchStream<PrefetchedRowGroup>,
    object: &str,
    (base, end): (u64, u64),
    expected: usize,
) -> Result<Loaded, ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt { object: object.to_owned(), position: 0, reason };
    let mut records = Vec::with_capacity(expected);
    let mut offsets = Vec::with_capacity(expected);
    while let Some(batch) = stream.try_next().await.map_err(|e| read_error(object, e))? {
        for (offset, record) in decode_batch(&batch).map_err(|e| corrupt(e.to_string()))? {
            let floor = offsets.last().map_or(base, |o| o + 1);
            if offset < floor || offset >= end {
                return Err(corrupt(format!(
                    "row holds offset {offset}; the next belongs in [{floor}, {end})"
                )));
            }
            offsets.push(offset);
            records.push(record);
        }
    }
    Ok(Loaded { records, offsets: Some(offsets) })
}

/// Decodes row group `index` of the file from row `skip` on, checking that
/// it holds offsets of the piece only, as many rows as the footer says. The
/// column chunks (or, past a skip, the pages the page index names) are read
/// with one request of ranged GETs; decoding, CPU work, then runs on the
/// blocking pool, at most `decodes` at once.
pub async fn load_row_group(
    store: &Arc<dyn ObjectStore>,
    cache: &FooterCache,
    decodes: &Semaphore,
    (object, file_len, index, skip): (&str, u64, usize, u64),
    piece: &Piece,
) -> Result<Loaded, ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt { object: object.to_owned(), position: 0, reason };
    let meta = footer(store, cache, object, file_len).await?;
    let group = meta.metadata().row_groups().get(index);
    let batch_rows = group.map_or(1024, |g| decode_batch_rows(g.num_rows(), g.total_byte_size()));
    let rows = u64::try_from(group.map_or(0, |g| g.num_rows())).unwrap_or(0);
    let ranges = PrefetchedRowGroup::ranges(meta.metadata(), index, skip)
        .filter(|r| skip <= rows && r.iter().all(|r| r.end <= file_len))
        .ok_or_else(|| corrupt(format!("row group {index} lies outside the file")))?;
    let parts = store.get_ranges(&Path::from(object), &ranges).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => ReadError::Gone(object.to_owned()),
        other => ReadError::Storage(other.to_string()),
    })?;
    let parts = ranges.iter().map(|r| r.start).zip(parts).collect();
    let prefetched = PrefetchedRowGroup::new(parts, meta.metadata().clone());
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(prefetched, meta)
        .with_row_groups(vec![index])
        .with_batch_size(batch_rows);
    let expected = usize::try_from(rows - skip).unwrap_or(0);
    if skip > 0 {
        let skipped = usize::try_from(skip).unwrap_or(0);
        builder = builder.with_row_selection(RowSelection::from(vec![
            RowSelector::skip(skipped),
            RowSelector::select(expected),
        ]));
    }
    let stream = builder.build().map_err(|e| read_error(object, e))?;
    let (name, bounds) = (object.to_owned(), (piece.base_offset + skip, piece.end_offset));
    let _permit = decodes.acquire().await.map_err(|e| corrupt(e.to_string()))?;
    let decoded = tokio::task::spawn_blocking(move || {
        futures::executor::block_on(decode(stream, &name, bounds, expected))
    })
    .await
    .map_err(|e| corrupt(e.to_string()))?;
    let loaded = decoded?;
    if loaded.records.len() != expected {
        return Err(corrupt(format!("{} rows, the footer says {expected}", loaded.records.len())));
    }
    Ok(loaded)
}
