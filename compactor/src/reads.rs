//! Chunk reads shared by the partitions archived at once. A segment holds a
//! chunk of every partition of its flush, side by side, so partitions
//! archived together each want a chunk of the same segments. Each registers
//! the chunks it will read; the first read of an object then GETs the run of
//! registered chunks around its own (up to [`MAX_FETCH`]), and the others
//! slice their chunk from it. Fewer requests (each one is billed, and a
//! store that reads whole blocks does the block's work once), the same
//! bytes: every chunk is still checked against its own checksum.
//!
//! A fetch is kept only while a registered chunk inside it is unread, and
//! the bytes kept are capped ([`MAX_HELD`]): past the cap a read fetches
//! its own chunk alone, as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use shale_controller_client::{ChunkFormat, ChunkSpan};
use shale_core::Record;
use shale_core::segment::{ChunkLocation, ChunkReadError, decode_read_chunk, storage_error};

/// Largest GET made for several chunks.
const MAX_FETCH: u64 = 4 << 20;
/// Bytes between two chunks still fetched with one GET.
const MAX_GAP: u64 = 64 << 10;
/// Bytes of fetches kept for chunks not yet read.
const MAX_HELD: u64 = 32 << 20;

type Fetched = Shared<BoxFuture<'static, Result<Bytes, ChunkReadError>>>;

/// One GET of a run of chunks of an object, in flight or done.
struct Fetch {
    range: Range<u64>,
    bytes: Fetched,
}

/// An object's registered, unread chunks and its fetches.
#[derive(Default)]
struct Object {
    /// Position → (length, registrations that have not read it yet).
    unread: BTreeMap<u64, (u32, u32)>,
    fetches: Vec<Fetch>,
}

impl Object {
    fn covering(&self, range: &Range<u64>) -> Option<&Fetch> {
        self.fetches.iter().find(|f| f.range.start <= range.start && range.end <= f.range.end)
    }

    fn fetched(&self, position: u64) -> bool {
        self.fetches.iter().any(|f| f.range.contains(&position))
    }

    /// `range` widened over the unread, unfetched chunks around it, gaps
    /// of at most [`MAX_GAP`], to at most `limit` bytes.
    fn run_around(&self, range: Range<u64>, limit: u64) -> Range<u64> {
        let mut run = range.clone();
        for (&position, &(len, _)) in self.unread.range(range.end..) {
            let end = position + u64::from(len);
            let gap = position.checked_sub(run.end);
            if gap.is_none_or(|g| g > MAX_GAP) || end - run.start > limit || self.fetched(position) {
                break;
            }
            run.end = end;
        }
        for (&position, &(len, _)) in self.unread.range(..range.start).rev() {
            let end = position + u64::from(len);
            if end > run.start
                || run.start - end > MAX_GAP
                || run.end - position > limit
                || self.fetched(position)
            {
                break;
            }
            run.start = position;
        }
        run
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Object>,
    /// Bytes of the fetches in `objects`.
    held: u64,
}

impl State {
    /// One registration has read (or given up) the chunk at `position`:
    /// fetches left holding no unread chunk, or failed, are let go.
    fn done(&mut self, object: &str, position: u64) {
        let Some(entry) = self.objects.get_mut(object) else { return };
        if let Some((_, readers)) = entry.unread.get_mut(&position) {
            *readers -= 1;
            if *readers == 0 {
                entry.unread.remove(&position);
            }
        }
        let unread = &entry.unread;
        let mut released = 0;
        entry.fetches.retain(|f| {
            let failed = matches!(f.bytes.peek(), Some(Err(_)));
            let keep = !failed && unread.range(f.range.clone()).next().is_some();
            if !keep {
                released += f.range.end - f.range.start;
            }
            keep
        });
        self.held -= released;
        if entry.unread.is_empty() && entry.fetches.is_empty() {
            self.objects.remove(object);
        }
    }
}

/// The reads of every partition being archived.
pub(crate) struct SharedReads {
    store: Arc<dyn ObjectStore>,
    state: Mutex<State>,
    /// Bytes of fetches kept at most ([`MAX_HELD`]).
    max_held: u64,
}

impl SharedReads {
    pub fn new(store: Arc<dyn ObjectStore>) -> Arc<Self> {
        Self::with_max_held(store, MAX_HELD)
    }

    fn with_max_held(store: Arc<dyn ObjectStore>, max_held: u64) -> Arc<Self> {
        Arc::new(Self { store, state: Mutex::default(), max_held })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Announces the segment chunks of `spans`, to be read through the
    /// answer; those left unread are let go when it is dropped.
    pub fn register(self: &Arc<Self>, spans: &[ChunkSpan]) -> Registration {
        let mut state = self.state();
        let mut unread = HashSet::new();
        for span in spans.iter().filter(|s| s.chunk.format == ChunkFormat::Segment) {
            let chunk = &span.chunk;
            if !unread.insert((chunk.object.clone(), chunk.position)) {
                continue;
            }
            let entry = state.objects.entry(chunk.object.clone()).or_default();
            entry.unread.entry(chunk.position).or_insert((chunk.len, 0)).1 += 1;
        }
        Registration { reads: self.clone(), unread: Mutex::new(unread) }
    }

    /// The bytes of the chunk at `range` of `object`, from a fetch covering
    /// it or from a new one.
    async fn bytes(&self, object: &str, range: Range<u64>) -> Result<Bytes, ChunkReadError> {
        let (start, fetched) = {
            let mut guard = self.state();
            let state = &mut *guard;
            let room = self.max_held.saturating_sub(state.held).min(MAX_FETCH);
            let entry = state.objects.entry(object.to_owned()).or_default();
            match entry.covering(&range) {
                Some(f) => (f.range.start, f.bytes.clone()),
                None => {
                    let run = entry.run_around(range.clone(), room.max(range.end - range.start));
                    let bytes = get(self.store.clone(), object.to_owned(), run.clone());
                    // a run of this chunk alone serves nobody else: not kept
                    if run != range && run.end - run.start <= room {
                        entry.fetches.push(Fetch { range: run.clone(), bytes: bytes.clone() });
                        state.held += run.end - run.start;
                    }
                    (run.start, bytes)
                }
            }
        };
        let bytes = fetched.await?;
        let from = usize::try_from(range.start - start).unwrap_or(usize::MAX);
        let to = usize::try_from(range.end - start).unwrap_or(usize::MAX);
        if to > bytes.len() {
            return Err(ChunkReadError::Storage {
                object: object.to_owned(),
                reason: format!("the store answered {} bytes for a range of {}", bytes.len(), to),
            });
        }
        Ok(bytes.slice(from..to))
    }
}

fn get(store: Arc<dyn ObjectStore>, object: String, range: Range<u64>) -> Fetched {
    async move {
        store.get_range(&Path::from(object.as_str()), range).await.map_err(|e| storage_error(&object, e))
    }
    .boxed()
    .shared()
}

/// One partition's share of the reads.
pub(crate) struct Registration {
    reads: Arc<SharedReads>,
    /// Registered chunks (object, position) not read yet.
    unread: Mutex<HashSet<(String, u64)>>,
}

impl Registration {
    /// Reads, checks and decodes one chunk.
    pub async fn read(&self, at: ChunkLocation<'_>) -> Result<Vec<Record>, ChunkReadError> {
        let range = at.position..at.position + u64::from(at.len);
        let bytes = self.reads.bytes(at.object, range).await;
        let key = (at.object.to_owned(), at.position);
        if self.unread.lock().unwrap_or_else(PoisonError::into_inner).remove(&key) {
            self.reads.state().done(at.object, at.position);
        } else {
            // a chunk read without registering: its fetch may be let go
            self.reads.state().done(at.object, u64::MAX);
        }
        decode_read_chunk(at, bytes?).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let unread = std::mem::take(&mut *self.unread.lock().unwrap_or_else(PoisonError::into_inner));
        let mut state = self.reads.state();
        for (object, position) in unread {
            state.done(&object, position);
        }
    }
}

#[cfg(test)]
mod tests;
