//! The state machine store: the [`Metadata`] model behind a lock that readers
//! share, plus snapshots. The latest snapshot is kept in one file
//! (`snapshot.bin`, written atomically and fsync'd) and loaded at start, so
//! the log can be purged behind it and state survives restarts.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::feed::{self, Feed};
use super::storage_error;
use crate::metrics::fine_latency;
use crate::model::Metadata;
use crate::types::{
    CommandReply, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The latest snapshot, in the state directory.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Everything the state machine holds; a snapshot is this, serialized.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateMachineData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub metadata: Metadata,
}

/// State shared between the state machine (writer) and readers (the API).
#[derive(Debug)]
pub struct SharedState {
    data: RwLock<StateMachineData>,
    /// Bumped after every applied batch, so long-polls wake up.
    applied: watch::Sender<u64>,
    /// What the applied entries changed, for gateways' mirrors; written only
    /// under the data's write lock.
    feed: Mutex<Feed>,
    /// Each applied batch's time, lock wait included.
    pub apply_seconds: Histogram,
}

impl SharedState {
    /// Reads the current state. Hold the guard briefly.
    pub fn read(&self) -> RwLockReadGuard<'_, StateMachineData> {
        self.data.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The feed of changes; take it while holding [`Self::read`] for a
    /// consistent view.
    pub fn feed(&self) -> MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver that changes whenever entries are applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn replace(&self, data: StateMachineData) {
        let mut state = self.data.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.feed().reset(data.last_applied.map_or(0, |l| l.index));
        *state = data;
        drop(state);
        self.applied.send_modify(|n| *n += 1);
    }
}

/// The openraft state machine of one controller node.
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    dir: PathBuf,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_error(ErrorSubject::StateMachine, verb, e)
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, starting from the snapshot there if any.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let data = match load_snapshot(dir)? {
            Some((_, bytes)) => decode_data(&bytes)?,
            None => StateMachineData::default(),
        };
        let (applied, _) = watch::channel(0);
        // the changes up to the snapshot are not known: a mirror behind it starts over
        let mut feed = Feed::default();
        feed.reset(data.last_applied.map_or(0, |l| l.index));
        let shared = Arc::new(SharedState {
            data: RwLock::new(data),
            applied,
            feed: Mutex::new(feed),
            apply_seconds: fine_latency(),
        });
        Ok(Self { shared, dir: dir.to_owned() })
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }
}

/// The state in a snapshot: MessagePack with named fields. Snapshots from
/// before it (JSON, starting with `{`) are still read.
fn encode_data(data: &StateMachineData) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec_named(data).map_err(|e| sm_err(ErrorVerb::Read, e))
}

fn decode_data(bytes: &[u8]) -> Result<StateMachineData, StorageError> {
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes).map_err(|e| sm_err(ErrorVerb::Read, e));
    }
    rmp_serde::from_slice(bytes).map_err(|e| sm_err(ErrorVerb::Read, e))
}

/// A snapshot file (`snapshot.bin`, and the same bytes in the bucket):
/// `meta_len: u32 LE`, the meta as JSON, then the state (see [`encode_data`]).
pub(crate) fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let meta_json = serde_json::to_vec(meta)?;
    let mut out = Vec::with_capacity(4 + meta_json.len() + data.len());
    out.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_json);
    out.extend_from_slice(data);
    Ok(out)
}

/// Splits a snapshot file into its meta and its state bytes.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), std::io::Error> {
    let corrupt = || std::io::Error::other("snapshot file is truncated");
    let len_bytes: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)?;
    let meta_end = 4usize.saturating_add(u32::from_le_bytes(len_bytes) as usize);
    let meta_json = bytes.get(4..meta_end).ok_or_else(corrupt)?;
    let meta = serde_json::from_slice(meta_json).map_err(std::io::Error::other)?;
    Ok((meta, &bytes[meta_end..]))
}

/// Replaces `dir/snapshot.bin` atomically and durably.
pub(crate) fn write_snapshot_file(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// The bytes of `dir/snapshot.bin`, if there is one.
pub(crate) fn read_snapshot_file(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads and splits `dir/snapshot.bin`.
fn load_snapshot(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let Some(bytes) = read_snapshot_file(dir).map_err(|e| sm_err(ErrorVerb::Read, e))? else {
        return Ok(None);
    };
    let (meta, data) = decode_snapshot(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    Ok(Some((meta, data.to_vec())))
}

/// Encodes and writes a snapshot on a blocking thread.
async fn save_snapshot(dir: PathBuf, meta: SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
    let subject = ErrorSubject::Snapshot(Some(meta.signature()));
    let err = move |e: std::io::Error| storage_error(subject.clone(), ErrorVerb::Write, e);
    let bytes = encode_snapshot(&meta, &data).map_err(|e| err(std::io::Error::other(e)))?;
    tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &bytes))
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)
}

/// Builds snapshots from the shared state.
pub struct SnapshotBuilder {
    shared: Arc<SharedState>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Copies the state under the read lock (a memory copy), then encodes
    /// and writes it on a blocking thread, so applying entries waits only for
    /// the copy, never for the encoding or the disk.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let copy = self.shared.read().clone();
        let copied_in = started.elapsed();
        let snapshot_id = match copy.last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "0-0".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: copy.last_applied,
            last_membership: copy.membership.clone(),
            snapshot_id,
        };
        let data = tokio::task::spawn_blocking(move || encode_data(&copy))
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, e))??;
        save_snapshot(self.dir.clone(), meta.clone(), data.clone()).await?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes = data.len(),
            copy_ms = copied_in.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut replies = Vec::new();
        {
            let mut state = self.shared.data.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut feed = self.shared.feed();
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Blank => CommandReply::None,
                    EntryPayload::Normal(command) => {
                        let (reply, changes) = feed::apply(&mut state.metadata, &command);
                        for change in changes {
                            feed.push(entry.log_id.index, change);
                        }
                        reply
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandReply::None
                    }
                };
                replies.push(reply);
            }
        }
        self.shared.applied.send_modify(|n| *n += 1);
        self.shared.apply_seconds.observe(started.elapsed().as_secs_f64());
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone(), dir: self.dir.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let mut data = decode_data(&bytes)?;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        save_snapshot(self.dir.clone(), meta.clone(), bytes).await?;
        self.shared.replace(data);
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let dir = self.dir.clone();
        let found = tokio::task::spawn_blocking(move || load_snapshot(&dir))
            .await
            .map_err(|e| sm_err(ErrorVerb::Read, e))??;
        Ok(found.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
