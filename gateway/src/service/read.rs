//! Reads from many partitions at once, with a wait: the read path of an HTTP
//! group member and of a Kafka Fetch. Each partition is read and finished
//! (rendered as JSON, encoded as a Kafka batch) on a task of its own, so the
//! partitions of one answer use every core.

use std::sync::Arc;

use shale_core::{Offset, Record};
use tokio::task::JoinSet;

use super::ServiceError;
use crate::reader::{FetchRequest, Fetched};
use crate::state::AppState;

/// Partitions read at once when nobody waits.
const READS_AT_ONCE: usize = 8;

/// One partition's read, finished.
pub type PartitionRead<T> = Option<Result<T, ServiceError>>;

/// Reads every request's partition and passes what it holds to `finish`,
/// answering in request order.
///
/// Without a wait, every partition is read, a few at a time. With one (any
/// request's `wait` above zero), all are read at once and the answer comes
/// as soon as one partition has records: the reads still waiting are
/// cancelled and answer `None`.
pub async fn read_many<T, F>(
    state: &Arc<AppState>,
    requests: Vec<FetchRequest>,
    finish: F,
) -> Vec<PartitionRead<T>>
where
    T: Send + 'static,
    F: Fn(&FetchRequest, Fetched) -> Result<T, ServiceError> + Send + Sync + 'static,
{
    let waits = requests.iter().any(|r| !r.wait.is_zero());
    let mut answers: Vec<PartitionRead<T>> = (0..requests.len()).map(|_| None).collect();
    let finish = Arc::new(finish);
    let mut pending = requests.into_iter().enumerate();
    let at_once = if waits { usize::MAX } else { READS_AT_ONCE };
    let mut reads = JoinSet::new();
    let spawn = |reads: &mut JoinSet<_>, (i, request): (usize, FetchRequest)| {
        let (state, finish) = (state.clone(), finish.clone());
        reads.spawn(async move {
            let read = state.reader.fetch(&request).await.map_err(ServiceError::from);
            let got = read.as_ref().is_ok_and(|f| !f.records.is_empty());
            (i, got, read.and_then(|f| finish(&request, f)))
        });
    };
    for next in pending.by_ref().take(at_once) {
        spawn(&mut reads, next);
    }
    while let Some(joined) = reads.join_next().await {
        let Ok((i, got, answer)) = joined else {
            // a read that panicked answers nothing; its partition stays None
            continue;
        };
        answers[i] = Some(answer);
        if let Some(next) = pending.next() {
            spawn(&mut reads, next);
        }
        if got && waits {
            break;
        }
    }
    // dropping the set cancels the reads still waiting
    answers
}

/// Counts records and bytes served, for `/metrics` (a `finish` that serves
/// what it read calls it).
pub fn count_out(state: &AppState, records: &[(Offset, Record)]) {
    let bytes: usize = records.iter().map(|(_, r)| r.size()).sum();
    state.metrics.records_out.inc_by(records.len() as u64);
    state.metrics.bytes_out.inc_by(bytes as u64);
}
