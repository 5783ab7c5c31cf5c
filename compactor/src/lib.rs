//! Shale's compactor: it rolls committed ranges older than a topic's
//! `archive_after_ms` into the Parquet archive (`archive.rs`), merges small
//! archive files into large ones (`merge.rs`), keeps the latest record per
//! key of compacted topics (`clean.rs`), and deletes objects nothing
//! references (`gc.rs`). See `docs/ARCHIVE.md` for the files it writes and
//! `docs/ARCHITECTURE.md` for how it fits.
//!
//! Work is leased per partition from the controller, with an epoch, the
//! way gateways lead partitions: every swap names the epoch and the
//! controller refuses a stale one, so two compactors never rewrite one
//! partition and a killed one loses nothing (its files are garbage until a
//! swap references them). One bounded pass, [`Compactor::run_once`], is the
//! unit `shale compactor`, `shale dev` and a Lambda all run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use object_store::ObjectStore;
use serde::Serialize;
use shale_controller_client::{ChunkSpan, CompactionTask, Controller, ControllerError, TopicInfo};
use shale_core::archive::ArchiveError;
use shale_core::segment::ChunkReadError;
use shale_core::{Clock, TopicName};
use tokio::time::Instant;

mod archive;
pub mod clean;
#[cfg(test)]
mod fixtures;
pub mod gc;
mod merge;
mod metrics;
mod reads;
mod scan;
pub use metrics::CompactorMetrics;

/// How the compactor works; plain settings, apart from the parts handed in.
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// This compactor's identity in the controller (unique per process).
    pub id: String,
    /// Its partitions move to other compactors this long after its last heartbeat.
    pub lease_ms: u64,
    /// An unreferenced object is deleted only once it is at least this old.
    pub gc_grace_ms: u64,
    /// Pause between passes.
    pub interval: Duration,
    /// One archive file takes at most about this many bytes of chunks.
    pub max_archive_bytes: u64,
    /// Small archive files are merged into files of about this size.
    pub merge_target_bytes: u64,
}

/// Partitions rewritten at once in a pass: reading and encoding overlap
/// across them (each is bounded in memory on its own).
const PARALLEL_PARTITIONS: usize = 4;

/// Default `--gc-grace-ms`: far longer than any read holds an index entry
/// or a gateway holds a segment between its PUT and its commit.
pub const DEFAULT_GC_GRACE_MS: u64 = 10 * 60 * 1000;

impl CompactorConfig {
    pub fn new(id: String) -> Self {
        Self {
            id,
            lease_ms: 10_000,
            gc_grace_ms: DEFAULT_GC_GRACE_MS,
            interval: Duration::from_secs(2),
            max_archive_bytes: 128 << 20,
            merge_target_bytes: 256 << 20,
        }
    }

    /// How often the collector lists the bucket: half the grace, within
    /// [1 s, 5 min].
    fn gc_every(&self) -> Duration {
        Duration::from_millis(self.gc_grace_ms / 2).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub partitions: u64,
    pub archived_files: u64,
    pub archived_records: u64,
    pub merged_files: u64,
    pub merged_inputs: u64,
    /// Files of compacted topics rewritten, and the records they dropped.
    pub cleaned_files: u64,
    pub cleaned_records: u64,
    /// Bytes of chunks and files read, and of archive files written.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Partitions left alone because their archive folder holds files the
    /// index does not reference (waiting for garbage collection).
    pub deferred: u64,
    pub deleted_objects: u64,
    pub errors: u64,
    /// The budget ran out before every partition was visited.
    pub out_of_time: bool,
}

impl PassReport {
    fn absorb(&mut self, other: &PassReport) {
        self.partitions += other.partitions;
        self.archived_files += other.archived_files;
        self.archived_records += other.archived_records;
        self.merged_files += other.merged_files;
        self.merged_inputs += other.merged_inputs;
        self.cleaned_files += other.cleaned_files;
        self.cleaned_records += other.cleaned_records;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.deferred += other.deferred;
        self.deleted_objects += other.deleted_objects;
        self.errors += other.errors;
        self.out_of_time |= other.out_of_time;
    }

    pub fn did_work(&self) -> bool {
        self.archived_files + self.merged_files + self.cleaned_files + self.deleted_objects + self.errors > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Chunk(#[from] ChunkReadError),
    #[error("{0}")]
    Invalid(String),
}

/// A partition the compactor may rewrite, with its topic.
#[derive(Debug, Clone)]
struct Work<'a> {
    task: &'a CompactionTask,
    topic: &'a TopicInfo,
}

pub struct Compactor {
    config: CompactorConfig,
    controller: Arc<dyn Controller>,
    store: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    /// Chunk reads shared by the partitions archived at once.
    reads: Arc<reads::SharedReads>,
    /// Partitions (topic id, partition, epoch) whose archive folder was
    /// found to hold only referenced files under this lease epoch.
    clean: Mutex<BTreeSet<(u64, u32, u64)>>,
    /// How far each compacted partition (topic id, partition) was cleaned.
    cleaned: Mutex<HashMap<(u64, u32), clean::Cleaned>>,
    last_gc: Mutex<Option<Instant>>,
    metrics: CompactorMetrics,
}

impl Compactor {
    pub fn new(
        config: CompactorConfig,
        controller: Arc<dyn Controller>,
        store: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let metrics = CompactorMetrics::default();
        Self {
            config,
            controller,
            reads: reads::SharedReads::new(store.clone()),
            store,
            clock,
            clean: Mutex::default(),
            cleaned: Mutex::default(),
            last_gc: Mutex::default(),
            metrics,
        }
    }

    pub fn config(&self) -> &CompactorConfig {
        &self.config
    }

    /// Totals of every pass so far.
    pub fn metrics(&self) -> &CompactorMetrics {
        &self.metrics
    }

    /// One bounded pass: renew the lease, archive or merge each held
    /// partition once (one file each at most), and collect garbage when this
    /// compactor is the collector and a collection is due. Stops visiting
    /// partitions once `budget` is spent; a file being written is finished.
    pub async fn run_once(&self, budget: Duration) -> Result<PassReport, CompactError> {
        let deadline = Instant::now() + budget;
        let renew_every = Duration::from_millis(self.config.lease_ms / 3);
        let first = self.controller.compactor_heartbeat(&self.config.id, self.config.lease_ms).await?;
        self.metrics.leased_partitions.set(first.tasks.len() as i64);
        let tasks = first.tasks.clone();
        let lease = Mutex::new(first);
        let topics: BTreeMap<TopicName, TopicInfo> =
            self.controller.list_topics().await?.into_iter().map(|t| (t.name.clone(), t)).collect();
        // partitions go PARALLEL_PARTITIONS at a time, the next starting as
        // soon as one is done; each checks the lease as renewed meanwhile
        let passes = async {
            let mut report = PassReport::default();
            let mut waiting = tasks.iter();
            let mut running = futures::stream::FuturesUnordered::new();
            loop {
                while running.len() < PARALLEL_PARTITIONS {
                    let Some(task) = waiting.next() else { break };
                    if Instant::now() >= deadline {
                        report.out_of_time = true;
                        break;
                    }
                    let held = lease.lock().unwrap_or_else(PoisonError::into_inner).tasks.contains(task);
                    if let Some(topic) = topics.get(&task.topic).filter(|t| t.id == task.topic_id && held) {
                        running.push(self.compact_one(Work { task, topic }));
                    }
                }
                match running.next().await {
                    Some(one) => report.absorb(&one),
                    None if report.out_of_time || waiting.len() == 0 => return report,
                    None => {}
                }
            }
        };
        let renew = async {
            loop {
                tokio::time::sleep(renew_every).await;
                match self.controller.compactor_heartbeat(&self.config.id, self.config.lease_ms).await {
                    Ok(renewed) => *lease.lock().unwrap_or_else(PoisonError::into_inner) = renewed,
                    Err(e) => tracing::warn!(error = %e, "cannot renew the compaction lease"),
                }
            }
        };
        let mut report = tokio::select! {
            report = passes => report,
            () = renew => PassReport::default(),
        };
        let lease = lease.into_inner().unwrap_or_else(PoisonError::into_inner);
        let partition_errors = report.errors;
        if lease.collector && self.gc_due() && Instant::now() < deadline {
            let now_ms = self.clock.now_ms();
            match gc::collect(self.store.as_ref(), self.controller.as_ref(), now_ms, self.config.gc_grace_ms)
                .await
            {
                Ok(deleted) => report.deleted_objects += deleted,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection failed");
                    report.errors += 1;
                }
            }
        }
        self.metrics.add(&PassReport {
            deleted_objects: report.deleted_objects,
            errors: report.errors.saturating_sub(partition_errors),
            ..PassReport::default()
        });
        Ok(report)
    }

    /// Passes until `shutdown` resolves, then hands the partitions over.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let budget = Duration::from_secs(60);
        loop {
            tokio::select! {
                pass = self.run_once(budget) => match pass {
                    Ok(report) if report.did_work() => tracing::info!(?report, "compaction pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "compaction pass failed"),
                },
                () = &mut shutdown => break,
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = &mut shutdown => break,
            }
        }
        self.leave().await;
    }

    /// Ends this compactor's lease so its partitions move at once; false
    /// when the controller could not be told (the lease then runs out).
    pub async fn leave(&self) -> bool {
        match self.controller.compactor_leave(&self.config.id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand the compaction leases over");
                false
            }
        }
    }

    /// One partition's share of a pass; a failure is logged and counted.
    async fn compact_one(&self, work: Work<'_>) -> PassReport {
        let mut report = PassReport { partitions: 1, ..PassReport::default() };
        if let Err(e) = self.compact_partition(work.clone(), &mut report).await {
            tracing::warn!(topic = %work.task.topic, partition = work.task.partition, error = %e, "compaction failed");
            self.forget_clean(work.task);
            report.errors += 1;
        }
        // counted as each partition is done, so a long pass shows progress
        self.metrics.add(&report);
        report
    }

    /// Archives the oldest committed range of the partition if it is due,
    /// else merges small archive files if some are due, else cleans a
    /// compacted topic's archive if that is due.
    async fn compact_partition(&self, work: Work<'_>, report: &mut PassReport) -> Result<(), CompactError> {
        let now_ms = self.clock.now_ms();
        let scan =
            scan::partition(self.controller.as_ref(), work.topic, work.task.partition, now_ms, &self.config)
                .await?;
        let merge = merge::choose(&scan.files, now_ms, &self.config);
        let key = (work.task.topic_id, work.task.partition);
        let last_clean = self.cleaned.lock().unwrap_or_else(PoisonError::into_inner).get(&key).copied();
        let settled = clean::settled(&scan.files, now_ms, self.config.gc_grace_ms);
        let clean = work.topic.config.cleanup_policy.compacts() && clean::due(settled, last_clean, now_ms);
        if scan.archivable.is_empty() && merge.is_none() && !clean {
            return Ok(());
        }
        if !self.is_clean(&work, &scan.files).await? {
            report.deferred += 1;
            return Ok(());
        }
        if !scan.archivable.is_empty() {
            return archive::archive(self, &work, &scan.archivable, report).await;
        }
        if let Some(files) = merge {
            return merge::merge(self, &work, files, report).await;
        }
        let cleaned = clean::clean(self, &work, settled, last_clean, report).await?;
        self.cleaned.lock().unwrap_or_else(PoisonError::into_inner).insert(key, cleaned);
        Ok(())
    }

    /// Whether the partition's archive folder holds only files its index
    /// references (listed once per lease epoch). Leftovers of a killed
    /// compactor, or of a deleted incarnation of the topic, would show up
    /// beside the new files in queries, so the partition waits for the
    /// collector to delete them.
    async fn is_clean(&self, work: &Work<'_>, files: &[ChunkSpan]) -> Result<bool, CompactError> {
        let key = (work.task.topic_id, work.task.partition, work.task.epoch);
        if self.clean.lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
            return Ok(true);
        }
        let prefix = shale_core::archive::partition_prefix(&work.topic.name, work.task.partition);
        let listed = gc::list(self.store.as_ref(), &prefix).await?;
        let referenced: BTreeSet<&str> = files.iter().map(|f| f.chunk.object.as_str()).collect();
        let leftovers: Vec<&str> =
            listed.iter().map(|(path, _)| path.as_str()).filter(|p| !referenced.contains(p)).collect();
        if !leftovers.is_empty() {
            tracing::info!(
                topic = %work.topic.name,
                partition = work.task.partition,
                leftovers = leftovers.len(),
                first = leftovers[0],
                "archive folder holds unreferenced files: waiting for garbage collection"
            );
            return Ok(false);
        }
        self.clean.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        Ok(true)
    }

    fn forget_clean(&self, task: &CompactionTask) {
        let key = (task.topic_id, task.partition, task.epoch);
        self.clean.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        self.cleaned.lock().unwrap_or_else(PoisonError::into_inner).remove(&(task.topic_id, task.partition));
    }

    fn gc_due(&self) -> bool {
        let mut last = self.last_gc.lock().unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= self.config.gc_every());
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}
