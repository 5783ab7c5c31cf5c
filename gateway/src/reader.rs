//! The read path: find the chunks holding an offset in the controller's index,
//! fetch exactly each chunk's byte range, check its CRC, decode, and return
//! records from the asked offset on. Decoded chunks are kept in a bounded
//! cache that the batcher fills with its own flushes, so tailing consumers
//! cost no GETs.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use quick_cache::{OptionsBuilder, Weighter};
use shale_controller_client::{ChunkSpan, Controller, ControllerError};
use shale_core::segment::decode_chunk;
use shale_core::{Offset, PartitionId, Record, TopicName};

use crate::metrics::GatewayMetrics;

/// Identifies a chunk: its object and byte position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub object: String,
    pub position: u64,
}

/// Weighs a decoded chunk by its payload bytes plus per-record overhead.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordWeighter;

impl Weighter<ChunkId, Arc<Vec<Record>>> for RecordWeighter {
    fn weight(&self, _key: &ChunkId, records: &Arc<Vec<Record>>) -> u64 {
        records.iter().map(|r| r.size() as u64 + 96).sum()
    }
}

pub type ChunkCache = quick_cache::sync::Cache<ChunkId, Arc<Vec<Record>>, RecordWeighter>;

/// Share of the cache for entries read again (quick_cache's "hot" region).
/// quick_cache defaults to 97% to resist scans, leaving new entries 3%: once
/// full, a flush's second chunk evicted its first before a tailing consumer
/// could read it. Here the newest chunks are the valuable ones, so new entries
/// get 90% and age out first-in first-out.
const HOT_SHARE: f64 = 0.1;

pub fn new_cache(bytes: u64) -> Arc<ChunkCache> {
    let options = OptionsBuilder::new()
        .estimated_items_capacity(4096)
        .weight_capacity(bytes)
        .hot_allocation(HOT_SHARE)
        .build();
    match options {
        Ok(options) => Arc::new(ChunkCache::with_options(
            options,
            RecordWeighter,
            Default::default(),
            Default::default(),
        )),
        // the options above are constants within their documented ranges
        Err(_) => Arc::new(ChunkCache::with_weighter(4096, bytes, RecordWeighter)),
    }
}

/// Chunks looked up per fetch at most.
const MAX_CHUNKS_PER_FETCH: usize = 64;
/// Chunk GETs in flight per fetch.
const PARALLEL_GETS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is out of range: the partition holds [{log_start_offset}, {high_watermark})")]
    OutOfRange { offset: Offset, log_start_offset: Offset, high_watermark: Offset },
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("reading a chunk failed: {0}")]
    Storage(String),
    #[error("chunk {object}@{position} is corrupt: {reason}")]
    Corrupt { object: String, position: u64, reason: String },
}

#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub from: Offset,
    pub max_records: usize,
    pub max_bytes: usize,
    pub wait: Duration,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Vec<(Offset, Record)>,
    pub next_offset: Offset,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

pub struct Reader {
    store: Arc<dyn ObjectStore>,
    controller: Arc<dyn Controller>,
    cache: Arc<ChunkCache>,
    metrics: Arc<GatewayMetrics>,
}

impl Reader {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        controller: Arc<dyn Controller>,
        cache: Arc<ChunkCache>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self { store, controller, cache, metrics }
    }

    /// Records from `from` on, within the limits; at least one record when any
    /// is available, even if it alone exceeds `max_bytes`.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ReadError> {
        let read = self
            .controller
            .read_partition(&req.topic, req.partition, req.from, MAX_CHUNKS_PER_FETCH, req.wait)
            .await?;
        if req.from < read.log_start_offset || req.from > read.high_watermark {
            return Err(ReadError::OutOfRange {
                offset: req.from,
                log_start_offset: read.log_start_offset,
                high_watermark: read.high_watermark,
            });
        }
        let chosen = choose_chunks(read.chunks, req);
        let loaded: Vec<Arc<Vec<Record>>> = futures::stream::iter(chosen.iter().cloned())
            .map(|span| async move { self.load(&span).await })
            .buffered(PARALLEL_GETS)
            .try_collect()
            .await?;
        let mut records = Vec::new();
        let mut bytes = 0;
        'chunks: for (span, chunk) in chosen.iter().zip(&loaded) {
            for (i, record) in chunk.iter().enumerate() {
                let offset = span.base_offset + i as Offset;
                if offset < req.from {
                    continue;
                }
                let full = records.len() >= req.max_records
                    || (!records.is_empty() && bytes + record.size() > req.max_bytes);
                if full {
                    break 'chunks;
                }
                bytes += record.size();
                records.push((offset, record.clone()));
            }
        }
        let next_offset = records.last().map_or(req.from, |(o, _)| o + 1);
        Ok(Fetched {
            records,
            next_offset,
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
        })
    }

    async fn load(&self, span: &ChunkSpan) -> Result<Arc<Vec<Record>>, ReadError> {
        let id = ChunkId { object: span.chunk.object.clone(), position: span.chunk.position };
        if let Some(records) = self.cache.get(&id) {
            self.metrics.cache_hits.inc();
            return Ok(records);
        }
        self.metrics.cache_misses.inc();
        let range = span.chunk.position..span.chunk.position + u64::from(span.chunk.len);
        let bytes = self
            .store
            .get_range(&Path::from(span.chunk.object.as_str()), range)
            .await
            .map_err(|e| ReadError::Storage(e.to_string()))?;
        let corrupt = |reason: String| ReadError::Corrupt {
            object: span.chunk.object.clone(),
            position: span.chunk.position,
            reason,
        };
        let records = tokio::task::spawn_blocking(move || decode_chunk(bytes))
            .await
            .map_err(|e| corrupt(e.to_string()))?
            .map_err(|e| corrupt(e.to_string()))?;
        if records.len() != span.chunk.record_count as usize {
            return Err(corrupt(format!(
                "{} records, index says {}",
                records.len(),
                span.chunk.record_count
            )));
        }
        let records = Arc::new(records);
        self.cache.insert(id, records.clone());
        Ok(records)
    }
}

/// The chunks worth loading for one fetch: enough to cover the limits.
fn choose_chunks(chunks: Vec<ChunkSpan>, req: &FetchRequest) -> Vec<ChunkSpan> {
    let mut chosen = Vec::new();
    let (mut bytes, mut records) = (0usize, 0u64);
    for span in chunks {
        if !chosen.is_empty() && (bytes >= req.max_bytes || records >= req.max_records as u64) {
            break;
        }
        bytes += span.chunk.len as usize;
        records += span.end_offset() - span.base_offset.max(req.from);
        chosen.push(span);
    }
    chosen
}

#[cfg(test)]
mod tests;
