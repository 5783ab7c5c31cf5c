//! The read path: find the chunks holding an offset in the controller's index,
//! fetch exactly each chunk's byte range, check its CRC, decode, and return
//! records from the asked offset on. Decoded chunks are kept in a bounded
//! cache that the batcher fills with its own flushes, so tailing consumers
//! cost no GETs.
//!
//! Archived ranges are Parquet files (`archive.rs`): the reader loads a
//! file's footer once (cached), then reads the row group holding the offset
//! with ranged GETs of its column chunks, and caches it like a chunk. The
//! answer does not say which tier served it.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use quick_cache::{OptionsBuilder, Weighter};
use shale_controller_client::{ChunkFormat, ChunkRef, ChunkSpan, Controller, ControllerError};
use shale_core::segment::{ChunkLocation, ChunkReadError, read_chunk};
use shale_core::{Offset, PartitionId, Record, TopicName};

use crate::metrics::GatewayMetrics;

/// Identifies a chunk: its object and byte position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkId {
    pub object: String,
    pub position: u64,
}

/// A piece's decoded records. A segment chunk holds a record per offset
/// from its base; an archive row group lists its rows' offsets, which on a
/// compacted topic have gaps.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Record>,
    pub offsets: Option<Vec<Offset>>,
}

impl Loaded {
    /// A segment chunk's records.
    pub fn dense(records: Vec<Record>) -> Self {
        Self { records, offsets: None }
    }

    /// The records with their offsets, for a piece starting at `base`.
    fn iter(&self, base: Offset) -> impl Iterator<Item = (Offset, &Record)> {
        self.records.iter().enumerate().map(move |(i, record)| {
            let offset = self.offsets.as_ref().and_then(|o| o.get(i).copied()).unwrap_or(base + i as Offset);
            (offset, record)
        })
    }
}

/// Weighs a decoded piece by its payload bytes plus per-record overhead.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordWeighter;

impl Weighter<ChunkId, Arc<Loaded>> for RecordWeighter {
    fn weight(&self, _key: &ChunkId, loaded: &Arc<Loaded>) -> u64 {
        loaded.records.iter().map(|r| r.size() as u64 + 96).sum::<u64>()
            + loaded.offsets.as_ref().map_or(0, |o| 8 * o.len() as u64)
    }
}

pub type ChunkCache = quick_cache::sync::Cache<ChunkId, Arc<Loaded>, RecordWeighter>;

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
    /// The object is gone: the index moved on (a merge, retention) since
    /// it was read. Reading again from a fresh index finds the records.
    #[error("object {0} is gone")]
    Gone(String),
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
    footers: archive::FooterCache,
    /// Row group decodes running at once (CPU work on the blocking pool).
    decodes: tokio::sync::Semaphore,
    metrics: Arc<GatewayMetrics>,
}

/// A piece of a partition to load: a segment chunk, or one row group of an
/// archive file.
#[derive(Debug, Clone)]
struct Piece {
    base_offset: Offset,
    /// Past the last offset the piece covers (records or gaps).
    end_offset: Offset,
    /// Stored bytes, for `max_bytes`.
    bytes: u64,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Chunk(ChunkRef),
    /// Row group `index`, from row `skip_rows` (the first of a page) on.
    RowGroup {
        object: String,
        file_len: u64,
        index: usize,
        skip_rows: u64,
    },
}

/// How many times a fetch reads the index again after finding an object gone.
const GONE_RETRIES: usize = 3;
/// How many runs of cleaned-away offsets a fetch reads past before it
/// answers with no records and a `next_offset` past them.
const MAX_GAPS: usize = 8;

impl Reader {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        controller: Arc<dyn Controller>,
        cache: Arc<ChunkCache>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let decodes = tokio::sync::Semaphore::new(cores);
        Self { store, controller, cache, footers: archive::footer_cache(), decodes, metrics }
    }

    /// Records from `from` on, within the limits; at least one record when any
    /// is available, even if it alone exceeds `max_bytes`. On a compacted
    /// topic, offsets whose records were cleaned away are skipped: the
    /// answer's `next_offset` moves past them.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ReadError> {
        let mut attempt = 0;
        let mut req = req.clone();
        let mut gaps = 0;
        loop {
            match self.fetch_once(&req).await {
                Err(ReadError::Gone(object)) if attempt < GONE_RETRIES => {
                    tracing::debug!(%object, "object gone under a fetch: reading the index again");
                    attempt += 1;
                }
                // only cleaned-away offsets: read on from past them
                Ok(f) if f.records.is_empty() && f.next_offset > req.from && gaps < MAX_GAPS => {
                    req.from = f.next_offset;
                    gaps += 1;
                }
                other => return other,
            }
        }
    }

    async fn fetch_once(&self, req: &FetchRequest) -> Result<Fetched, ReadError> {
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
        // with nothing to load (files cleaned empty), read on past them
        let spans_end = read.chunks.last().map_or(req.from, ChunkSpan::end_offset);
        let chosen = self.pieces(read.chunks, req).await?;
        let loaded: Vec<Arc<Loaded>> = futures::stream::iter(chosen.iter().cloned())
            .map(|piece| async move { self.load(&piece).await })
            .buffered(PARALLEL_GETS)
            .try_collect()
            .await?;
        let mut records = Vec::new();
        let mut bytes = 0;
        // past the pieces read whole; a full answer ends at its last record
        let mut next_offset = chosen.last().map_or(spans_end, |p| p.end_offset).min(read.high_watermark);
        'chunks: for (piece, chunk) in chosen.iter().zip(&loaded) {
            for (offset, record) in chunk.iter(piece.base_offset) {
                if offset < req.from {
                    continue;
                }
                let full = records.len() >= req.max_records
                    || (!records.is_empty() && bytes + record.size() > req.max_bytes);
                if full {
                    next_offset = offset;
                    break 'chunks;
                }
                bytes += record.size();
                records.push((offset, record.clone()));
            }
        }
        let next_offset = next_offset.max(req.from);
        Ok(Fetched {
            records,
            next_offset,
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
        })
    }

    /// The index entries as pieces to load, just enough to cover the
    /// fetch's limits (at least one): archive files become their row groups
    /// from the one holding `from` on, and only the files a fetch reaches
    /// have their footers read.
    async fn pieces(&self, spans: Vec<ChunkSpan>, req: &FetchRequest) -> Result<Vec<Piece>, ReadError> {
        let mut chosen: Vec<Piece> = Vec::with_capacity(spans.len());
        let (mut bytes, mut records) = (0u64, 0u64);
        for span in spans {
            let candidates = match span.chunk.format {
                ChunkFormat::Segment => vec![Piece {
                    base_offset: span.base_offset,
                    end_offset: span.end_offset(),
                    bytes: u64::from(span.chunk.len),
                    source: Source::Chunk(span.chunk),
                }],
                ChunkFormat::Parquet => {
                    archive::row_groups(&self.store, &self.footers, &span, req.from).await?
                }
            };
            for piece in candidates.into_iter().filter(|p| p.end_offset > req.from) {
                if !chosen.is_empty() && (bytes >= req.max_bytes as u64 || records >= req.max_records as u64)
                {
                    return Ok(chosen);
                }
                bytes += piece.bytes;
                records += piece.end_offset - piece.base_offset.max(req.from);
                chosen.push(piece);
            }
        }
        Ok(chosen)
    }

    async fn load(&self, piece: &Piece) -> Result<Arc<Loaded>, ReadError> {
        let id = match &piece.source {
            Source::Chunk(chunk) => ChunkId { object: chunk.object.clone(), position: chunk.position },
            Source::RowGroup { object, index, skip_rows, .. } => {
                // a whole row group, if cached, serves a read from inside it too
                let whole = ChunkId { object: object.clone(), position: *index as u64 };
                if *skip_rows > 0
                    && let Some(loaded) = self.cache.get(&whole)
                {
                    self.metrics.cache_hits.inc();
                    return Ok(loaded);
                }
                ChunkId { object: object.clone(), position: *index as u64 | (skip_rows << 32) }
            }
        };
        // a load already in flight for this chunk is waited for, not repeated
        let guard = match self.cache.get_value_or_guard_async(&id).await {
            Ok(records) => {
                self.metrics.cache_hits.inc();
                return Ok(records);
            }
            Err(guard) => guard,
        };
        self.metrics.cache_misses.inc();
        let loaded = match &piece.source {
            Source::Chunk(chunk) => Loaded::dense(self.load_chunk(chunk).await?),
            Source::RowGroup { object, file_len, index, skip_rows } => {
                let at = (object.as_str(), *file_len, *index, *skip_rows);
                archive::load_row_group(&self.store, &self.footers, &self.decodes, at, piece).await?
            }
        };
        let loaded = Arc::new(loaded);
        // a failed load drops the guard instead: the next reader tries again
        let _ = guard.insert(loaded.clone());
        Ok(loaded)
    }

    async fn load_chunk(&self, chunk: &ChunkRef) -> Result<Vec<Record>, ReadError> {
        let at = ChunkLocation {
            object: &chunk.object,
            position: chunk.position,
            len: chunk.len,
            record_count: chunk.record_count,
        };
        read_chunk(self.store.as_ref(), at).await.map_err(|e| match e {
            ChunkReadError::Gone(object) => ReadError::Gone(object),
            ChunkReadError::Storage { reason, .. } => ReadError::Storage(reason),
            ChunkReadError::Corrupt { object, position, reason } => {
                ReadError::Corrupt { object, position, reason }
            }
        })
    }
}

mod archive;
#[cfg(test)]
mod tests;
