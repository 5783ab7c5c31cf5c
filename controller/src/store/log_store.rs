//! The Raft log in a redb database: one table of entries by index, one of
//! small values (vote, committed, last purged). Every write commits durably
//! before openraft is told it is flushed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, Vote};
use prometheus_client::metrics::histogram::Histogram;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::storage_error;
use crate::metrics::fine_latency;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The durable Raft log. Cloning shares the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Each append's time to durable, fsync included.
    append_seconds: Histogram,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    storage_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Database::create(path).map_err(write_err)?;
        let txn = db.begin_write().map_err(write_err)?;
        txn.open_table(ENTRIES).map_err(write_err)?;
        txn.open_table(META).map_err(write_err)?;
        txn.commit().map_err(write_err)?;
        Ok(Self { db: Arc::new(db), append_seconds: fine_latency() })
    }

    /// The histogram of append times (encode, write, fsync).
    pub fn append_seconds(&self) -> Histogram {
        self.append_seconds.clone()
    }

    /// Runs blocking database work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db)).await.map_err(write_err)?
    }

    async fn get_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, StorageError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(META).map_err(read_err)?;
            match table.get(key).map_err(read_err)? {
                Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(read_err),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(write_err)?;
            txn.open_table(META).map_err(write_err)?.insert(key, bytes.as_slice()).map_err(write_err)?;
            txn.commit().map_err(write_err)
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(read_err)?;
            let table = txn.open_table(ENTRIES).map_err(read_err)?;
            let mut out = Vec::new();
            for item in table.range::<u64>((start, end)).map_err(read_err)? {
                let (_, v) = item.map_err(read_err)?;
                out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED).await?;
        let last: Option<Entry> = self
            .blocking(|db| {
                let txn = db.begin_read().map_err(read_err)?;
                let table = txn.open_table(ENTRIES).map_err(read_err)?;
                match table.last().map_err(read_err)? {
                    Some((_, v)) => serde_json::from_slice(v.value()).map(Some).map_err(read_err),
                    None => Ok(None),
                }
            })
            .await?;
        let last_log_id = last.map(|e| e.log_id).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(VOTE).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let encoded = entries
            .into_iter()
            .map(|e| serde_json::to_vec(&e).map(|bytes| (e.log_id.index, bytes)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(write_err)?;
        let result = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(write_err)?;
                {
                    let mut table = txn.open_table(ENTRIES).map_err(write_err)?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice()).map_err(write_err)?;
                    }
                }
                txn.commit().map_err(write_err)
            })
            .await;
        self.append_seconds.observe(started.elapsed().as_secs_f64());
        let io = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(write_err)?;
            txn.open_table(ENTRIES)
                .map_err(write_err)?
                .retain_in::<u64, _>(log_id.index.., |_, _| false)
                .map_err(write_err)?;
            txn.commit().map_err(write_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(LAST_PURGED, &log_id).await?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(write_err)?;
            txn.open_table(ENTRIES)
                .map_err(write_err)?
                .retain_in::<u64, _>((Bound::Unbounded, Bound::Included(log_id.index)), |_, _| false)
                .map_err(write_err)?;
            txn.commit().map_err(write_err)
        })
        .await
    }
}
