use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

use super::*;
use crate::types::{StorageError, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| storage_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e))?;
        let log = LogStore::open(&dir.path().join("raft-log"))?;
        let sm = StateMachineStore::open(&dir.path().join("state"))?;
        Ok((dir, log, sm))
    }
}

/// openraft's own storage test suite, run against our log store and state machine.
#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}
