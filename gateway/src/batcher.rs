//! The write path. Producers' records for all partitions gather in one batch;
//! a batch is flushed when it holds `flush_bytes`, or `flush_interval` after
//! the previous flush (see [`run_batches`]). One flush is one PUT of one
//! segment object. Segments are written concurrently (up to
//! `max_flushes_in_flight`) but committed strictly in flush order, and a
//! producer is answered only after its commit is applied.
//! Commits are grouped: every segment written while the previous commit was
//! under way goes in the next one, one Raft entry (one fsync) for them all.
//! Memory is bounded: every byte is counted against `buffer_bytes` from
//! arrival until its producer is answered; beyond it appends are refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use shale_controller_client::RequestCommit;
use shale_controller_client::command::ProducerBatch;
use shale_controller_client::{
    ChunkCommit, CommitSegment, Controller, ControllerError, MetaError, SegmentOutcomes,
};
use shale_core::segment::{ChunkEntry, Compression, SegmentWriter};
use shale_core::{Clock, Offset, PartitionId, Record, TopicName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::hedge::Hedger;
use crate::metrics::GatewayMetrics;
use crate::reader::{ChunkCache, ChunkId, Loaded};
use crate::stages::{FlightTimes, Stages};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProduceError {
    #[error("the gateway buffer of {limit} bytes is full; retry after a moment")]
    Overloaded { limit: usize },
    #[error("writing the segment failed: {0}")]
    Storage(String),
    #[error(transparent)]
    Controller(ControllerError),
    #[error(transparent)]
    Refused(MetaError),
    #[error("encoding the segment failed: {0}")]
    Encode(String),
    #[error("the gateway is shutting down")]
    Stopped,
}

/// A record with its partition chosen.
#[derive(Debug, Clone)]
pub struct PartitionedRecord {
    pub partition: PartitionId,
    pub record: Record,
}

/// Per record, in request order: where it was written.
pub type Acked = Vec<(PartitionId, Offset)>;

/// What the committer hands a waiting request: its offsets, and when its
/// segment passed each stage.
type Answer = (Acked, FlightTimes);
type Reply = oneshot::Sender<Result<Answer, ProduceError>>;

/// Bytes held against the buffer from admission until the producer is answered.
pub struct BufferPermit {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    metrics: Arc<GatewayMetrics>,
    /// When admission began: the request's first stage starts here.
    since: Instant,
}

impl BufferPermit {
    /// Counts the request's admission from `at` (a Kafka produce that waited
    /// for room began waiting then).
    pub fn since(mut self, at: Instant) -> Self {
        self.since = at;
        self
    }

    /// Splits off `bytes` of this reservation for a part of the request (a
    /// partition of a Kafka produce); None when fewer are left.
    pub fn split(&mut self, bytes: usize) -> Option<BufferPermit> {
        let bytes = bytes.max(1);
        let part = self._permit.split(bytes)?;
        self.bytes -= bytes as i64;
        Some(BufferPermit {
            _permit: part,
            bytes: bytes as i64,
            metrics: self.metrics.clone(),
            since: self.since,
        })
    }
}

impl Drop for BufferPermit {
    fn drop(&mut self) {
        self.metrics.buffer_bytes.dec_by(self.bytes);
    }
}

/// Conditions checked when a request is committed. A guarded request gets
/// chunks of its own, so the controller can refuse exactly its records.
#[derive(Debug, Clone, Default)]
pub struct RequestGuard {
    pub idempotency_key: Option<String>,
    pub expected_offset: Option<Offset>,
    /// A Kafka idempotent producer's batch (one partition): its sequence is
    /// checked by the controller.
    pub producer: Option<ProducerBatch>,
}

struct Append {
    topic: TopicName,
    topic_id: u64,
    records: Vec<PartitionedRecord>,
    guard: Option<RequestGuard>,
    permit: BufferPermit,
    reply: Reply,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct ChunkKey {
    topic: TopicName,
    topic_id: u64,
    partition: PartitionId,
    /// The guarded request owning the chunk (index in the batch's requests).
    request: Option<u32>,
}

struct Waiter {
    reply: Reply,
    _permit: BufferPermit,
    /// Per record: (chunk index in the batch, index within the chunk).
    slots: Vec<(usize, usize)>,
}

#[derive(Default)]
struct Batch {
    chunks: Vec<(ChunkKey, Vec<Record>)>,
    chunk_of: HashMap<ChunkKey, usize>,
    requests: Vec<RequestCommit>,
    waiters: Vec<Waiter>,
    bytes: usize,
}

impl Batch {
    fn add(&mut self, append: Append) {
        let mut slots = Vec::with_capacity(append.records.len());
        let request = append.guard.as_ref().map(|_| self.requests.len() as u32);
        // runs of (chunk, count) in request order, for a guarded request
        let mut runs: Vec<(u32, u32)> = Vec::new();
        // chunk index per partition of this append: one key lookup per partition, not per record
        let mut local: HashMap<PartitionId, usize> = HashMap::new();
        for PartitionedRecord { partition, record } in append.records {
            let index = *local.entry(partition).or_insert_with(|| {
                let key =
                    ChunkKey { topic: append.topic.clone(), topic_id: append.topic_id, partition, request };
                let chunks = &mut self.chunks;
                *self.chunk_of.entry(key.clone()).or_insert_with(|| {
                    chunks.push((key, Vec::new()));
                    chunks.len() - 1
                })
            });
            self.bytes += record.size();
            slots.push((index, self.chunks[index].1.len()));
            self.chunks[index].1.push(record);
            match runs.last_mut() {
                Some((chunk, count)) if *chunk == index as u32 => *count += 1,
                _ => runs.push((index as u32, 1)),
            }
        }
        if let Some(guard) = append.guard {
            self.requests.push(RequestCommit {
                idempotency_key: guard.idempotency_key,
                expected_offset: guard.expected_offset,
                runs,
                producer: guard.producer,
            });
        }
        self.waiters.push(Waiter { reply: append.reply, _permit: append.permit, slots });
    }
}

/// A segment on its way: the PUT runs in `write`; the committer awaits it in order.
struct Flight {
    write: JoinHandle<Result<Written, ProduceError>>,
    keys: Vec<ChunkKey>,
    requests: Vec<RequestCommit>,
    waiters: Vec<Waiter>,
    sealed: Instant,
    /// One of `max_flushes_in_flight`, held until the flight is answered.
    _slot: OwnedSemaphorePermit,
}

struct Written {
    object: String,
    entries: Vec<ChunkEntry>,
    records: Vec<Vec<Record>>,
    encoded: Instant,
    written: Instant,
    hedged: bool,
}

/// Handle to the batcher tasks.
pub struct Batcher {
    tx: mpsc::Sender<Append>,
    budget: Arc<Semaphore>,
    limit: usize,
    metrics: Arc<GatewayMetrics>,
    /// Log a request's stages when it took this long (zero: never).
    log_slow: Duration,
}

/// What the batcher's tasks need.
pub struct BatcherParts {
    pub store: Arc<dyn ObjectStore>,
    pub controller: Arc<dyn Controller>,
    pub cache: Arc<ChunkCache>,
    pub metrics: Arc<GatewayMetrics>,
    pub clock: Arc<dyn Clock>,
}

impl Batcher {
    /// Starts the batching and committing tasks.
    pub fn start(config: &GatewayConfig, parts: BatcherParts) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (flights_tx, flights_rx) = mpsc::channel(config.max_flushes_in_flight);
        let slots = Arc::new(Semaphore::new(config.max_flushes_in_flight));
        let committer = Committer {
            controller: parts.controller,
            cache: parts.cache,
            metrics: parts.metrics.clone(),
            clock: parts.clock,
        };
        tokio::spawn(committer.run(flights_rx));
        let flusher = Flusher {
            store: parts.store,
            compression: config.compression,
            flights: flights_tx,
            slots,
            hedger: Arc::new(Hedger::new(config.hedge_percentile)),
            metrics: parts.metrics.clone(),
        };
        tokio::spawn(run_batches(rx, config.clone(), flusher));
        Self {
            tx,
            budget: Arc::new(Semaphore::new(config.buffer_bytes)),
            limit: config.buffer_bytes,
            metrics: parts.metrics,
            log_slow: config.log_slow,
        }
    }

    /// Reserves room for a request of `bytes` before its body is read; fails
    /// at once when the buffer is full, so waiting requests hold no memory.
    pub fn reserve(&self, bytes: usize) -> Result<BufferPermit, ProduceError> {
        let bytes = bytes.max(1);
        let overloaded = || ProduceError::Overloaded { limit: self.limit };
        let count = u32::try_from(bytes).map_err(|_| overloaded())?;
        let permit = self.budget.clone().try_acquire_many_owned(count).map_err(|_| overloaded())?;
        self.metrics.buffer_bytes.inc_by(bytes as i64);
        Ok(BufferPermit {
            _permit: permit,
            bytes: bytes as i64,
            metrics: self.metrics.clone(),
            since: Instant::now(),
        })
    }

    /// Appends records of one topic under a reservation; resolves once they
    /// are committed, and records how long each stage took.
    pub async fn append(
        &self,
        topic: TopicName,
        topic_id: u64,
        records: Vec<PartitionedRecord>,
        guard: Option<RequestGuard>,
        permit: BufferPermit,
    ) -> Result<Acked, ProduceError> {
        self.submit(topic, topic_id, records, guard, permit).await?.acked().await
    }

    /// Queues records of one topic under a reservation. Records queued one
    /// after the other are committed in that order.
    pub async fn submit(
        &self,
        topic: TopicName,
        topic_id: u64,
        records: Vec<PartitionedRecord>,
        guard: Option<RequestGuard>,
        permit: BufferPermit,
    ) -> Result<Queued, ProduceError> {
        let (reply, answer) = oneshot::channel();
        let since = permit.since;
        let append = Append { topic, topic_id, records, guard, permit, reply };
        let arrived = Instant::now();
        self.tx.send(append).await.map_err(|_| ProduceError::Stopped)?;
        Ok(Queued { answer, since, arrived, metrics: self.metrics.clone(), log_slow: self.log_slow })
    }
}

/// Records in the batcher's queue, awaiting their commit.
pub struct Queued {
    answer: oneshot::Receiver<Result<Answer, ProduceError>>,
    since: Instant,
    arrived: Instant,
    metrics: Arc<GatewayMetrics>,
    log_slow: Duration,
}

impl Queued {
    /// Where each record was written, once committed; records the stages.
    pub async fn acked(self) -> Result<Acked, ProduceError> {
        let (acked, flight) = self.answer.await.map_err(|_| ProduceError::Stopped)??;
        Stages::new(self.since, self.arrived, &flight, Instant::now()).record(&self.metrics, self.log_slow);
        Ok(acked)
    }
}

struct Flusher {
    store: Arc<dyn ObjectStore>,
    compression: Compression,
    flights: mpsc::Sender<Flight>,
    /// Flights sealed and not yet answered.
    slots: Arc<Semaphore>,
    hedger: Arc<Hedger>,
    metrics: Arc<GatewayMetrics>,
}

impl Flusher {
    /// Seals the batch and starts its PUT; waits only if too many are in flight.
    async fn flush(&self, batch: Batch) {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            answer_all(batch.waiters, &ProduceError::Stopped);
            return;
        };
        let keys: Vec<ChunkKey> = batch.chunks.iter().map(|(k, _)| k.clone()).collect();
        let write = tokio::spawn(write_segment(
            self.store.clone(),
            self.hedger.clone(),
            self.metrics.clone(),
            self.compression,
            batch.chunks,
        ));
        let flight = Flight {
            write,
            keys,
            requests: batch.requests,
            waiters: batch.waiters,
            sealed: Instant::now(),
            _slot: slot,
        };
        if let Err(mpsc::error::SendError(flight)) = self.flights.send(flight).await {
            flight.write.abort();
            answer_all(flight.waiters, &ProduceError::Stopped);
        }
    }
}

/// Gathers appends into batches. A batch leaves when it holds `flush_bytes`,
/// else `flush_interval` after the previous flush, or at once if that is
/// already past (with whatever queued behind its first request). So a flush
/// below `flush_bytes` follows the previous one by an interval at least (the
/// PUTs the interval bounds), but a request that comes further from the last
/// flush than the interval does not wait it out alone. After a full segment
/// the next batch lingers for an interval from its first request: a loaded
/// gateway's producers, answered together by one group commit, are about to
/// send again, and their requests should fill a segment, not leave one by one.
async fn run_batches(mut rx: mpsc::Receiver<Append>, config: GatewayConfig, flusher: Flusher) {
    let interval = config.flush_interval;
    let mut batch = Batch::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    // when the last flush had its slot (so after a wait for a slot the next
    // batch still gathers), and whether it was full
    let mut last_flush: Option<(tokio::time::Instant, bool)> = None;
    loop {
        let next = match deadline {
            None => rx.recv().await,
            Some(at) => tokio::select! {
                append = rx.recv() => append,
                () = tokio::time::sleep_until(at) => {
                    flusher.flush(std::mem::take(&mut batch)).await;
                    last_flush = Some((tokio::time::Instant::now(), false));
                    deadline = None;
                    continue;
                }
            },
        };
        let Some(append) = next else { break };
        let first = batch.waiters.is_empty();
        batch.add(append);
        let now = tokio::time::Instant::now();
        let due = match last_flush {
            None => now,
            Some((_, true)) => now + interval,
            Some((at, false)) => at + interval,
        };
        let at_once = first && due <= now;
        if at_once && !interval.is_zero() {
            // a zero interval flushes each request alone
            while batch.bytes < config.flush_bytes {
                let Ok(append) = rx.try_recv() else { break };
                batch.add(append);
            }
        }
        if batch.bytes >= config.flush_bytes || at_once {
            let full = batch.bytes >= config.flush_bytes;
            flusher.flush(std::mem::take(&mut batch)).await;
            last_flush = Some((tokio::time::Instant::now(), full));
            deadline = None;
        } else if first {
            deadline = Some(due);
        }
    }
    if !batch.waiters.is_empty() {
        flusher.flush(batch).await;
    }
}

async fn write_segment(
    store: Arc<dyn ObjectStore>,
    hedger: Arc<Hedger>,
    metrics: Arc<GatewayMetrics>,
    compression: Compression,
    chunks: Vec<(ChunkKey, Vec<Record>)>,
) -> Result<Written, ProduceError> {
    let (segment, records) = tokio::task::spawn_blocking(move || {
        let bytes: usize = chunks.iter().flat_map(|(_, r)| r).map(|r| r.size() + 16).sum();
        let mut writer = SegmentWriter::with_capacity(compression, bytes);
        // laid out by partition, so that neighbouring partitions' chunks
        // (the compactor archives several at once) are read with one GET
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        order.sort_by_key(|&i| (chunks[i].0.topic.as_str(), chunks[i].0.partition));
        for &i in &order {
            let (key, records) = &chunks[i];
            writer.add_chunk(key.topic.as_str(), key.partition, records)?;
        }
        let mut segment = writer.finish();
        // the entries back in the batch's order, as the commit pairs them with its keys
        let mut entries: Vec<(usize, ChunkEntry)> = order.into_iter().zip(segment.chunks).collect();
        entries.sort_unstable_by_key(|(i, _)| *i);
        segment.chunks = entries.into_iter().map(|(_, entry)| entry).collect();
        let records: Vec<Vec<Record>> = chunks.into_iter().map(|(_, r)| r).collect();
        Ok((segment, records))
    })
    .await
    .map_err(|e| ProduceError::Encode(e.to_string()))?
    .map_err(|e: shale_core::segment::SegmentError| ProduceError::Encode(e.to_string()))?;
    let encoded = Instant::now();
    let (key, hedged) = hedger
        .put(&store, &metrics, segment.bytes)
        .await
        .map_err(|e| ProduceError::Storage(e.to_string()))?;
    Ok(Written {
        object: key.to_string(),
        entries: segment.chunks,
        records,
        encoded,
        written: Instant::now(),
        hedged,
    })
}

fn answer_all(waiters: Vec<Waiter>, error: &ProduceError) {
    for w in waiters {
        let _ = w.reply.send(Err(error.clone()));
    }
}

struct Committer {
    controller: Arc<dyn Controller>,
    cache: Arc<ChunkCache>,
    metrics: Arc<GatewayMetrics>,
    clock: Arc<dyn Clock>,
}

impl Committer {
    /// Commits flights in the order they were flushed: the oldest is waited
    /// for, and every later one already written joins its commit.
    async fn run(self, mut flights: mpsc::Receiver<Flight>) {
        let mut queue: VecDeque<Flight> = VecDeque::new();
        loop {
            if queue.is_empty() {
                match flights.recv().await {
                    Some(flight) => queue.push_back(flight),
                    None => return,
                }
            }
            let mut group = Vec::new();
            loop {
                while let Ok(flight) = flights.try_recv() {
                    queue.push_back(flight);
                }
                let Some(mut flight) = queue.pop_front() else { break };
                if !group.is_empty() && !flight.write.is_finished() {
                    queue.push_front(flight);
                    break;
                }
                match (&mut flight.write).await {
                    Ok(Ok(written)) => group.push((flight, written)),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "segment write failed");
                        answer_all(flight.waiters, &e);
                    }
                    Err(e) => answer_all(flight.waiters, &ProduceError::Encode(e.to_string())),
                }
            }
            if !group.is_empty() {
                self.commit(group).await;
            }
        }
    }

    /// Commits written flights, in order, in one controller call.
    async fn commit(&self, mut group: Vec<(Flight, Written)>) {
        let commits = group.iter_mut().map(|(flight, written)| self.commit_of(flight, written)).collect();
        // Cache before committing: a long-poll wakes the moment the commit is
        // applied and must find the chunk here, not in the store. Entries of a
        // failed commit are never looked up (no index entry names them) and age out.
        for (_, written) in &mut group {
            for (entry, records) in written.entries.iter().zip(std::mem::take(&mut written.records)) {
                let id = ChunkId { object: written.object.clone(), position: entry.position };
                self.cache.insert(id, Arc::new(Loaded::dense(records)));
            }
        }
        let commit_started = Instant::now();
        let outcomes = match self.controller.commit_segments(commits).await {
            Ok(outcomes) if outcomes.len() == group.len() => outcomes,
            Ok(_) => {
                let e = ProduceError::Encode("the commit reply does not match the segments sent".into());
                group.into_iter().for_each(|(flight, _)| answer_all(flight.waiters, &e));
                return;
            }
            Err(e) => {
                tracing::warn!(segments = group.len(), error = %e, "segment commit failed");
                let e = ProduceError::Controller(e);
                group.into_iter().for_each(|(flight, _)| answer_all(flight.waiters, &e));
                return;
            }
        };
        let committed = Instant::now();
        self.metrics.segment_commits.inc();
        for ((flight, written), outcomes) in group.into_iter().zip(outcomes) {
            let times = FlightTimes {
                sealed: flight.sealed,
                encoded: written.encoded,
                written: written.written,
                commit_started,
                committed,
                hedged: written.hedged,
            };
            self.metrics.segments_flushed.inc();
            self.metrics.flush_seconds.observe(flight.sealed.elapsed().as_secs_f64());
            answer(flight.waiters, &flight.keys, &outcomes, times);
        }
    }

    fn commit_of(&self, flight: &mut Flight, written: &Written) -> CommitSegment {
        let chunks = flight
            .keys
            .iter()
            .zip(&written.entries)
            .map(|(key, entry)| ChunkCommit {
                topic: key.topic.clone(),
                topic_id: key.topic_id,
                partition: key.partition,
                position: entry.position,
                len: entry.len,
                record_count: entry.record_count,
                max_timestamp_ms: entry.max_timestamp_ms,
                request: key.request,
            })
            .collect();
        CommitSegment {
            object: written.object.clone(),
            committed_ms: self.clock.now_ms(),
            chunks,
            requests: std::mem::take(&mut flight.requests),
        }
    }
}

/// Answers a committed segment's requests with their offsets, or with why
/// their chunks were refused.
fn answer(waiters: Vec<Waiter>, keys: &[ChunkKey], outcomes: &SegmentOutcomes, times: FlightTimes) {
    for waiter in waiters {
        // a retried request: answer with the offsets of its first commit
        let replay = waiter.slots.first().and_then(|&(chunk, _)| match outcomes.get(chunk) {
            Some(Err(MetaError::Duplicate { offsets })) => Some(expand(offsets)),
            _ => None,
        });
        if let Some(acked) = replay {
            let _ = waiter.reply.send(Ok((acked, times)));
            continue;
        }
        let answer = waiter
            .slots
            .iter()
            .map(|&(chunk, index)| match outcomes.get(chunk) {
                Some(Ok(base)) => Ok((keys[chunk].partition, base + index as Offset)),
                Some(Err(e)) => Err(ProduceError::Refused(e.clone())),
                None => Err(ProduceError::Encode("commit reply is missing a chunk".into())),
            })
            .collect::<Result<Acked, ProduceError>>();
        let _ = waiter.reply.send(answer.map(|acked| (acked, times)));
    }
}

/// Per record (partition, offset) from runs of consecutive offsets.
fn expand(runs: &[shale_controller_client::OffsetRun]) -> Acked {
    runs.iter().flat_map(|r| (0..u64::from(r.count)).map(move |i| (r.partition, r.base_offset + i))).collect()
}

#[cfg(test)]
mod tests;
