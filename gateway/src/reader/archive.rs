//! Reading archived ranges: an index entry of format Parquet is one file of
//! the partition's archive (`shale_core::archive`). Its footer is read once
//! (one ranged GET of its tail when the footer fits 64 KiB) and
//! cached; a fetch then reads the row group holding its offset, one ranged
//! GET per column chunk, and decodes it into records.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::errors::ParquetError;
use shale_controller_client::ChunkSpan;
use shale_core::Record;
use shale_core::archive::{ArchiveFile, decode_batch};

use super::{Piece, ReadError, Source};

/// Footers of archive files, by object key.
pub type FooterCache = quick_cache::sync::Cache<String, ArrowReaderMetadata>;

/// Footers kept: each is a few KiB per row group.
const FOOTERS: usize = 4096;
/// Rows per decoded Arrow batch.
const BATCH_ROWS: usize = 8192;

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
    ArchiveFile::new(store.clone(), Path::from(object), file_len)
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

/// The file's row groups as pieces, in offset order.
pub async fn row_groups(
    store: &Arc<dyn ObjectStore>,
    cache: &FooterCache,
    span: &ChunkSpan,
) -> Result<Vec<Piece>, ReadError> {
    let object = &span.chunk.object;
    let file_len = u64::from(span.chunk.len);
    let meta = footer(store, cache, object, file_len).await?;
    let mut base_offset = span.base_offset;
    let mut pieces = Vec::new();
    for (index, group) in meta.metadata().row_groups().iter().enumerate() {
        let rows = u32::try_from(group.num_rows()).unwrap_or(u32::MAX);
        pieces.push(Piece {
            base_offset,
            record_count: rows,
            bytes: u64::try_from(group.compressed_size()).unwrap_or(0),
            source: Source::RowGroup { object: object.clone(), file_len, index },
        });
        base_offset += u64::from(rows);
    }
    if base_offset != span.end_offset() {
        return Err(ReadError::Corrupt {
            object: object.clone(),
            position: 0,
            reason: format!(
                "the file holds offsets up to {base_offset}, the index says {}",
                span.end_offset()
            ),
        });
    }
    Ok(pieces)
}

/// The records of a row group's batches, checking that their offsets run
/// on from `base`.
async fn decode(
    mut stream: ParquetRecordBatchStream<ArchiveFile>,
    object: &str,
    base: u64,
    expected: usize,
) -> Result<Vec<Record>, ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt { object: object.to_owned(), position: 0, reason };
    let mut records = Vec::with_capacity(expected);
    while let Some(batch) = stream.try_next().await.map_err(|e| read_error(object, e))? {
        for (offset, record) in decode_batch(&batch).map_err(|e| corrupt(e.to_string()))? {
            let want = base + records.len() as u64;
            if offset != want {
                return Err(corrupt(format!("row holds offset {offset} where {want} belongs")));
            }
            records.push(record);
        }
    }
    Ok(records)
}

/// Decodes row group `index` of the file, checking that it holds exactly
/// the piece's offsets.
pub async fn load_row_group(
    store: &Arc<dyn ObjectStore>,
    cache: &FooterCache,
    object: &str,
    file_len: u64,
    index: usize,
    piece: &Piece,
) -> Result<Vec<Record>, ReadError> {
    let meta = footer(store, cache, object, file_len).await?;
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader(store, object, file_len), meta)
        .with_row_groups(vec![index])
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| read_error(object, e))?;
    // decoding is CPU work: it runs on the blocking pool, which drives the
    // stream's GETs through this runtime
    let runtime = tokio::runtime::Handle::current();
    let (name, base, expected) = (object.to_owned(), piece.base_offset, piece.record_count as usize);
    let decoded =
        tokio::task::spawn_blocking(move || runtime.block_on(decode(stream, &name, base, expected)))
            .await
            .map_err(|e| ReadError::Corrupt {
                object: object.to_owned(),
                position: 0,
                reason: e.to_string(),
            })?;
    let records = decoded?;
    if records.len() != piece.record_count as usize {
        return Err(ReadError::Corrupt {
            object: object.to_owned(),
            position: 0,
            reason: format!("{} rows, the footer says {}", records.len(), piece.record_count),
        });
    }
    Ok(records)
}
