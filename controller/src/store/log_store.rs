//! The Raft log: entries, vote and purge point in memory, every change
//! first written durably to the write-ahead files of [`super::wal`]. The
//! log is short (it is purged behind each snapshot), so memory holds it all
//! and reads never touch the disk. Every file begins with the vote and purge
//! point as they stood, so a file older than the purge point can be removed.
//!
//! The committed log id is kept in memory and written only at the head of
//! each file: openraft allows it to read back lower than it was, and an
//! extra durable write per commit would cost more than it saves on restart.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use super::storage_error;
use super::wal::{FILE_BYTES, Wal};
use crate::metrics::fine_latency;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// A record larger than this is split (an append of many entries).
const MAX_RECORD: usize = (FILE_BYTES / 4) as usize;

/// One durable change to the log.
#[derive(Debug, Serialize, Deserialize)]
enum Change {
    /// At the head of every file.
    State {
        vote: Option<Vote<NodeId>>,
        committed: Option<LogId>,
        last_purged: Option<LogId>,
    },
    Entries(Vec<Entry>),
    Vote(Vote<NodeId>),
    /// Entries from this index on are gone.
    Truncate(u64),
    /// Entries up to this id are gone.
    Purge(LogId),
}

#[derive(Debug, Default)]
struct Log {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl Log {
    fn apply(&mut self, change: Change) {
        match change {
            Change::State { vote, committed, last_purged } => {
                (self.vote, self.committed) = (vote, committed.or(self.committed));
                self.last_purged = last_purged.max(self.last_purged);
            }
            Change::Entries(entries) => self.entries.extend(entries.into_iter().map(|e| (e.log_id.index, e))),
            Change::Vote(vote) => self.vote = Some(vote),
            Change::Truncate(index) => drop(self.entries.split_off(&index)),
            Change::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                self.last_purged = Some(log_id);
            }
        }
    }

    fn state(&self) -> Change {
        Change::State { vote: self.vote, committed: self.committed, last_purged: self.last_purged }
    }
}

struct Writer {
    wal: Wal,
    /// Per file, oldest first: the highest entry index written to it.
    files: BTreeMap<u64, Option<u64>>,
}

/// The durable Raft log. Cloning shares it.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<RwLock<Log>>,
    writer: Arc<Mutex<Writer>>,
    /// Each append's time to durable.
    append_seconds: Histogram,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens (or creates) the log in the directory `dir`, replaying it.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let (wal, replayed) = Wal::open(dir).map_err(read_err)?;
        let mut log = Log::default();
        let mut files = BTreeMap::new();
        let mut current_written = false;
        for file in replayed {
            current_written = file.seq == wal.seq() && !file.records.is_empty();
            let highest = files.entry(file.seq).or_insert(None);
            for record in file.records {
                let change: Change = serde_json::from_slice(&record).map_err(read_err)?;
                if let Change::Entries(entries) = &change {
                    *highest = entries.iter().map(|e| e.log_id.index).max().max(*highest);
                }
                log.apply(change);
            }
        }
        files.entry(wal.seq()).or_insert(None);
        let store = Self {
            log: Arc::new(RwLock::new(log)),
            writer: Arc::new(Mutex::new(Writer { wal, files })),
            append_seconds: fine_latency(),
        };
        if !current_written {
            // every file starts with the state, so the ones before it can go
            let state = store.read().state();
            store.write_now(state)?;
        }
        Ok(store)
    }

    /// Moves the entries and vote of a log kept by an earlier release (one
    /// redb database) into this one, then renames that file
    /// `raft-log.redb.imported`. Does nothing if `legacy` does not exist.
    pub fn import_redb(&self, legacy: &Path) -> Result<(), StorageError> {
        use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
        const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
        const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
        if !legacy.exists() {
            return Ok(());
        }
        let db = Database::open(legacy).map_err(read_err)?;
        let txn = db.begin_read().map_err(read_err)?;
        let meta = txn.open_table(META).map_err(read_err)?;
        let value = |key: &str| -> Result<Option<Vec<u8>>, StorageError> {
            Ok(meta.get(key).map_err(read_err)?.map(|v| v.value().to_vec()))
        };
        fn decode<T: serde::de::DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, StorageError> {
            bytes.map(|b| serde_json::from_slice(&b).map_err(read_err)).transpose()
        }
        let vote: Option<Vote<NodeId>> = decode(value("vote")?)?;
        let committed: Option<LogId> = decode::<Option<LogId>>(value("committed")?)?.flatten();
        let last_purged: Option<LogId> = decode(value("last_purged")?)?;
        self.write_now(Change::State { vote, committed, last_purged })?;
        let mut entries = Vec::new();
        for item in txn.open_table(ENTRIES).map_err(read_err)?.iter().map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            entries.push(serde_json::from_slice::<Entry>(v.value()).map_err(read_err)?);
        }
        let count = entries.len();
        if !entries.is_empty() {
            self.write_now(Change::Entries(entries))?;
        }
        drop(meta);
        drop(txn);
        drop(db);
        std::fs::rename(legacy, legacy.with_extension("redb.imported")).map_err(write_err)?;
        tracing::info!(entries = count, from = %legacy.display(), "imported the Raft log of an earlier release");
        Ok(())
    }

    /// The histogram of append times (encode and durable write).
    pub fn append_seconds(&self) -> Histogram {
        self.append_seconds.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Log> {
        self.log.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `change` durably, then applies it in memory. Blocking.
    fn write_now(&self, change: Change) -> Result<(), StorageError> {
        let payload = serde_json::to_vec(&change).map_err(write_err)?;
        let change = match change {
            Change::Entries(mut first) if payload.len() > MAX_RECORD && first.len() > 1 => {
                let second = first.split_off(first.len() / 2);
                self.write_now(Change::Entries(first))?;
                return self.write_now(Change::Entries(second));
            }
            other => other,
        };
        let mut writer = self.writer();
        if !writer.wal.fits(payload.len()) {
            writer.wal.rotate().map_err(write_err)?;
            let state = serde_json::to_vec(&self.read().state()).map_err(write_err)?;
            writer.wal.append(&state).map_err(write_err)?;
            let seq = writer.wal.seq();
            writer.files.insert(seq, None);
        }
        writer.wal.append(&payload).map_err(write_err)?;
        if let Change::Entries(entries) = &change {
            let seq = writer.wal.seq();
            let highest = writer.files.entry(seq).or_insert(None);
            *highest = entries.iter().map(|e| e.log_id.index).max().max(*highest);
        }
        let purged = match &change {
            Change::Purge(log_id) => Some(log_id.index),
            _ => None,
        };
        self.log.write().unwrap_or_else(PoisonError::into_inner).apply(change);
        if let Some(purged) = purged {
            remove_purged_files(&mut writer, purged);
        }
        Ok(())
    }

    /// Writes `change` off the async runtime.
    async fn write(&self, change: Change) -> Result<(), StorageError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_now(change)).await.map_err(write_err)?
    }
}

/// Removes the oldest files, while every entry they hold is purged; never
/// the file being written.
fn remove_purged_files(writer: &mut Writer, purged: u64) {
    let current = writer.wal.seq();
    while let Some((&seq, &highest)) = writer.files.first_key_value() {
        if seq == current || highest.is_some_and(|h| h > purged) {
            break;
        }
        writer.files.remove(&seq);
        writer.wal.remove(seq);
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.read().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.read();
        let last_log_id = log.entries.last_key_value().map(|(_, e)| e.log_id).or(log.last_purged);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write(Change::Vote(*vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.log.write().unwrap_or_else(PoisonError::into_inner).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let result = self.write(Change::Entries(entries.into_iter().collect())).await;
        self.append_seconds.observe(started.elapsed().as_secs_f64());
        let io = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(Change::Truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(Change::Purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::Command;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// An entry of about `bytes` bytes.
    fn entry(index: u64, bytes: usize) -> Entry {
        let name = shale_core::TopicName::new("t").expect("name");
        let config = Some(serde_json::json!({ "padding": "x".repeat(bytes) }));
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command::UpdateTopic { name, config, partitions: None }),
        }
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter(|f| f.as_ref().is_ok_and(|f| f.path().extension().is_some_and(|e| e == "wal")))
            .count()
    }

    #[test]
    fn purged_files_are_removed_and_the_vote_outlives_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        let vote = Vote::new(3, 1);
        {
            let log = LogStore::open(&path).expect("open");
            log.write_now(Change::Vote(vote)).expect("vote");
            // 1 MiB entries: 15 to a file
            for i in 1..=100 {
                log.write_now(Change::Entries(vec![entry(i, 1 << 20)])).expect("append");
            }
            assert!(log.writer().wal.seq() >= 4, "the log moved through several files");
            log.write_now(Change::Purge(log_id(90))).expect("purge");
            for _ in 0..200 {
                if files(&path) <= 3 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // the file being written and the prepared one, and at most one before them
            assert!(files(&path) <= 3, "{} files left", files(&path));
        }
        let log = LogStore::open(&path).expect("reopen");
        let read = log.read();
        assert_eq!(read.vote, Some(vote), "the vote was written before the files that are gone");
        assert_eq!(read.last_purged, Some(log_id(90)));
        assert_eq!(read.entries.keys().copied().collect::<Vec<_>>(), (91..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_truncated_tail_stays_truncated_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft-log");
        {
            let log = LogStore::open(&path).expect("open");
            log.write_now(Change::Entries((1..=5).map(|i| entry(i, 10)).collect())).expect("append");
            log.write_now(Change::Truncate(3)).expect("truncate");
            log.write_now(Change::Entries(vec![entry(3, 20)])).expect("append");
        }
        let log = LogStore::open(&path).expect("reopen");
        let read = log.read();
        assert_eq!(read.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(read.entries.get(&3), Some(&entry(3, 20)), "the entry written after the truncation");
    }

    #[test]
    fn a_log_of_an_earlier_release_is_imported_once() {
        use redb::{Database, TableDefinition};
        const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
        const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join("raft-log.redb");
        let vote = Vote::new(7, 2);
        {
            let db = Database::create(&legacy).expect("redb");
            let txn = db.begin_write().expect("txn");
            {
                let mut entries = txn.open_table(ENTRIES).expect("entries");
                for i in 4..=6 {
                    let bytes = serde_json::to_vec(&entry(i, 10)).expect("encode");
                    entries.insert(i, bytes.as_slice()).expect("insert");
                }
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert("vote", serde_json::to_vec(&vote).expect("vote").as_slice()).expect("vote");
                meta.insert("last_purged", serde_json::to_vec(&log_id(3)).expect("id").as_slice())
                    .expect("purged");
            }
            txn.commit().expect("commit");
        }
        let path = dir.path().join("raft-log");
        LogStore::open(&path).expect("open").import_redb(&legacy).expect("import");
        assert!(!legacy.exists() && legacy.with_extension("redb.imported").exists());
        let log = LogStore::open(&path).expect("reopen");
        log.import_redb(&legacy).expect("nothing left to import");
        let read = log.read();
        assert_eq!(read.vote, Some(vote));
        assert_eq!(read.last_purged, Some(log_id(3)));
        assert_eq!(read.entries.keys().copied().collect::<Vec<_>>(), vec![4, 5, 6]);
    }
}
