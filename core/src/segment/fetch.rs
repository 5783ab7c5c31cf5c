//! Reading one committed chunk back from the store: exactly its byte range,
//! checked and decoded on the blocking pool.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::decode_chunk;
use crate::Record;

/// Why a chunk could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChunkReadError {
    /// The object is not in the store (any more).
    #[error("object {0} is gone")]
    Gone(String),
    #[error("reading {object}: {reason}")]
    Storage { object: String, reason: String },
    #[error("chunk {object}@{position} is corrupt: {reason}")]
    Corrupt { object: String, position: u64, reason: String },
}

/// Where a chunk is, and how many records the index says it holds.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLocation<'a> {
    pub object: &'a str,
    pub position: u64,
    pub len: u32,
    pub record_count: u32,
}

/// Reads, checks and decodes one chunk.
pub async fn read_chunk(
    store: &dyn ObjectStore,
    at: ChunkLocation<'_>,
) -> Result<Vec<Record>, ChunkReadError> {
    let range = at.position..at.position + u64::from(at.len);
    let bytes =
        store.get_range(&Path::from(at.object), range).await.map_err(|e| storage_error(at.object, e))?;
    decode_read_chunk(at, bytes).await
}

/// What a failed GET of `object` means for a chunk read.
pub fn storage_error(object: &str, e: object_store::Error) -> ChunkReadError {
    match e {
        object_store::Error::NotFound { .. } => ChunkReadError::Gone(object.to_owned()),
        e => ChunkReadError::Storage { object: object.to_owned(), reason: e.to_string() },
    }
}

/// Checks and decodes the bytes of one chunk (exactly its range, read by
/// the caller) on the blocking pool.
pub async fn decode_read_chunk(at: ChunkLocation<'_>, bytes: Bytes) -> Result<Vec<Record>, ChunkReadError> {
    let corrupt = |reason: String| ChunkReadError::Corrupt {
        object: at.object.to_owned(),
        position: at.position,
        reason,
    };
    if bytes.len() != at.len as usize {
        return Err(corrupt(format!("{} bytes read, index says {}", bytes.len(), at.len)));
    }
    let records = tokio::task::spawn_blocking(move || decode_chunk(bytes))
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(|e| corrupt(e.to_string()))?;
    if records.len() != at.record_count as usize {
        return Err(corrupt(format!("{} records, index says {}", records.len(), at.record_count)));
    }
    Ok(records)
}
