//! Reading one committed chunk back from the store: exactly its byte range,
//! checked and decoded on the blocking pool.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::decode_chunk;
use crate::Record;

/// Why a chunk could not be read.
#[derive(Debug, thiserror::Error)]
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
    let bytes = store.get_range(&Path::from(at.object), range).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => ChunkReadError::Gone(at.object.to_owned()),
        e => ChunkReadError::Storage { object: at.object.to_owned(), reason: e.to_string() },
    })?;
    let corrupt = |reason: String| ChunkReadError::Corrupt {
        object: at.object.to_owned(),
        position: at.position,
        reason,
    };
    let records = tokio::task::spawn_blocking(move || decode_chunk(bytes))
        .await
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(|e| corrupt(e.to_string()))?;
    if records.len() != at.record_count as usize {
        return Err(corrupt(format!("{} records, index says {}", records.len(), at.record_count)));
    }
    Ok(records)
}
