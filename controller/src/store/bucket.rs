//! Snapshots in the bucket, so a controller node can be replaced from nothing.
//!
//! The leader copies each snapshot it builds to
//! `controller/snapshots/{term}-{index}.snap` (the same bytes as its local
//! `snapshot.bin`) and keeps the newest few. A node started with an empty data
//! directory first installs the newest one, then catches up from the leader.

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::state_machine::{decode_snapshot, read_snapshot_file, write_snapshot_file};

const PREFIX: &str = "controller/snapshots";
/// Snapshots kept in the bucket; older ones are deleted after an upload.
const KEEP: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("snapshot: {0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot has no log id")]
    Empty,
}

/// `(term, index)` of a snapshot object's key.
fn parse_key(key: &Path) -> Option<(u64, u64)> {
    let name = key.filename()?.strip_suffix(".snap")?;
    let (term, index) = name.split_once('-')?;
    Some((term.parse().ok()?, index.parse().ok()?))
}

/// Snapshot keys in the bucket, oldest first.
async fn list(store: &dyn ObjectStore) -> Result<Vec<((u64, u64), Path)>, BucketError> {
    let prefix = Path::from(PREFIX);
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut keys: Vec<_> =
        objects.into_iter().filter_map(|o| Some((parse_key(&o.location)?, o.location))).collect();
    keys.sort();
    Ok(keys)
}

/// Copies the snapshot in `state_dir` to the bucket and deletes all but the
/// newest few there; returns its key, or `None` when there is no snapshot.
pub async fn upload(store: &dyn ObjectStore, state_dir: &FsPath) -> Result<Option<String>, BucketError> {
    let dir = state_dir.to_owned();
    let Some(bytes) = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
        .await
        .map_err(std::io::Error::other)??
    else {
        return Ok(None);
    };
    let (meta, _) = decode_snapshot(&bytes)?;
    let log_id = meta.last_log_id.ok_or(BucketError::Empty)?;
    let key = Path::from(format!("{PREFIX}/{}-{}.snap", log_id.leader_id.term, log_id.index));
    store.put(&key, PutPayload::from(bytes)).await?;
    let keys = list(store).await?;
    for (_, old) in keys.iter().take(keys.len().saturating_sub(KEEP)) {
        store.delete(old).await?;
    }
    Ok(Some(key.to_string()))
}

/// Installs the newest snapshot in the bucket as `state_dir/snapshot.bin`;
/// returns its key, or `None` when the bucket has none.
pub async fn restore(
    store: &Arc<dyn ObjectStore>,
    state_dir: &FsPath,
) -> Result<Option<String>, BucketError> {
    let Some((_, key)) = list(store.as_ref()).await?.pop() else {
        return Ok(None);
    };
    let bytes = store.get(&key).await?.bytes().await?;
    decode_snapshot(&bytes)?; // refuse a damaged object before it becomes our state
    let dir = state_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        write_snapshot_file(&dir, &bytes)
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(Some(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_when_well_formed() {
        assert_eq!(parse_key(&Path::from("controller/snapshots/3-1200.snap")), Some((3, 1200)));
        assert_eq!(parse_key(&Path::from("controller/snapshots/3-x.snap")), None);
        assert_eq!(parse_key(&Path::from("controller/snapshots/31200.snap")), None);
        assert_eq!(parse_key(&Path::from("controller/snapshots/3-1200.tmp")), None);
    }
}
