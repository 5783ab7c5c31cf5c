//! Garbage collection: an object under `segments/` or `archive/` is deleted
//! only when no index entry references any byte of it **and** it is older
//! than the grace period (`--gc-grace-ms`). The bucket is listed first and
//! the references read after, from the controller leader behind a read
//! barrier: an object committed after that read was written less than a
//! commit's time ago, which the grace covers (the controller refuses to
//! commit a segment written more than 5 minutes before, so the grace must
//! exceed that). `controller/` (snapshots) is
//! never listed. This covers segments whose every chunk was archived or
//! dropped, segments whose commit failed or never came (a gateway killed
//! between its PUT and its commit), replaced archive files, and the objects
//! of deleted topics.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use shale_controller_client::Controller;
use shale_core::archive::ARCHIVE_PREFIX;

use crate::CompactError;

/// The folders garbage collection looks in.
pub const COLLECTED_PREFIXES: [&str; 2] = ["segments", ARCHIVE_PREFIX];

/// Every object under `prefix`, with its last-modified time (ms).
pub async fn list(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<(String, i64)>, object_store::Error> {
    let prefix = Path::from(prefix);
    store
        .list(Some(&prefix))
        .map_ok(|meta| (meta.location.to_string(), meta.last_modified.timestamp_millis()))
        .try_collect()
        .await
}

/// The objects of `listed` that may go: unreferenced and at least `grace_ms` old.
pub fn collectable<'a>(
    listed: &'a [(String, i64)],
    referenced: &BTreeSet<String>,
    now_ms: i64,
    grace_ms: u64,
) -> Vec<&'a str> {
    let born_by = now_ms.saturating_sub(i64::try_from(grace_ms).unwrap_or(i64::MAX));
    listed
        .iter()
        .filter(|(path, modified)| *modified <= born_by && !referenced.contains(path))
        .map(|(path, _)| path.as_str())
        .collect()
}

/// One collection: answers how many objects were deleted.
pub async fn collect(
    store: &dyn ObjectStore,
    controller: &dyn Controller,
    now_ms: i64,
    grace_ms: u64,
) -> Result<u64, CompactError> {
    let mut listed = Vec::new();
    for prefix in COLLECTED_PREFIXES {
        listed.extend(list(store, prefix).await?);
    }
    // after the listing: see the module docs
    let referenced: BTreeSet<String> = controller.referenced_objects().await?.into_iter().collect();
    let mut deleted = 0;
    for path in collectable(&listed, &referenced, now_ms, grace_ms) {
        match store.delete(&Path::from(path)).await {
            Ok(()) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, listed = listed.len(), "garbage collected");
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
