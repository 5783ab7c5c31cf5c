//! The compactor's counters, for `/metrics` where it runs in a server
//! process (`shale dev` registers them next to the gateway's).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::PassReport;

/// Totals of every pass; cloned handles share their values.
#[derive(Debug, Clone, Default)]
pub struct CompactorMetrics {
    pub archived_files: Counter,
    pub archived_records: Counter,
    pub merged_files: Counter,
    pub cleaned_files: Counter,
    pub cleaned_records: Counter,
    pub read_bytes: Counter,
    pub written_bytes: Counter,
    pub deleted_objects: Counter,
    pub deferred: Counter,
    pub errors: Counter,
    /// Partitions this compactor held at its last heartbeat.
    pub leased_partitions: Gauge,
}

impl CompactorMetrics {
    /// Registers every counter under `shale_compactor_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("shale_compactor");
        r.register("archived_files", "Archive files written and swapped in", self.archived_files.clone());
        r.register("archived_records", "Records moved into the archive", self.archived_records.clone());
        r.register("merged_files", "Merged archive files swapped in", self.merged_files.clone());
        r.register(
            "cleaned_files",
            "Files of compacted topics rewritten without dropped records",
            self.cleaned_files.clone(),
        );
        r.register(
            "cleaned_records",
            "Records dropped by cleanings (superseded, or old tombstones)",
            self.cleaned_records.clone(),
        );
        r.register("read_bytes", "Bytes of chunks and files read to rewrite them", self.read_bytes.clone());
        r.register("written_bytes", "Bytes of archive files written", self.written_bytes.clone());
        r.register("deleted_objects", "Objects deleted by garbage collection", self.deleted_objects.clone());
        r.register("deferred", "Partitions that waited for leftovers to be collected", self.deferred.clone());
        r.register("errors", "Partitions or collections that failed in a pass", self.errors.clone());
        r.register(
            "leased_partitions",
            "Partitions held at the last heartbeat",
            self.leased_partitions.clone(),
        );
    }

    pub(crate) fn add(&self, report: &PassReport) {
        self.archived_files.inc_by(report.archived_files);
        self.archived_records.inc_by(report.archived_records);
        self.merged_files.inc_by(report.merged_files);
        self.cleaned_files.inc_by(report.cleaned_files);
        self.cleaned_records.inc_by(report.cleaned_records);
        self.read_bytes.inc_by(report.bytes_read);
        self.written_bytes.inc_by(report.bytes_written);
        self.deleted_objects.inc_by(report.deleted_objects);
        self.deferred.inc_by(report.deferred);
        self.errors.inc_by(report.errors);
    }
}
