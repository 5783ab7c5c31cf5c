//! Garbage collection against the real metadata model: any interleaving of
//! segment PUTs and commits, archives, merges, cleanings, retention, topic deletes and
//! re-creations, and collections split between their listing and their
//! read of the references, must never delete an object the index
//! references; and once everything has aged, collection leaves exactly the
//! referenced objects.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shale_controller::model::{ChunkFormat, ChunkRef, Metadata, TopicConfig};
use shale_controller::types::{ChunkCommit, Command, CommandReply, CommitSegment, ReplaceRange};
use shale_core::TopicName;

use super::collectable;

const GRACE_MS: u64 = 1000;
/// A gateway commits a segment within this long of its PUT, or never: the
/// assumption the grace rests on (its commit attempts are bounded in time).
const COMMIT_WITHIN_MS: i64 = 400;
const TOPICS: u8 = 2;
const PARTITIONS: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<(u8, u8, u8)>),
    Commit(usize),
    Archive(u8, u8),
    Merge(u8, u8),
    Clean(u8, u8),
    Retention(u8, u64),
    Recreate(u8),
    GcList,
    GcFinish,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::collection::vec((0..TOPICS, 0..PARTITIONS as u8, 1u8..5), 1..4).prop_map(Op::Put),
        3 => any::<usize>().prop_map(Op::Commit),
        2 => (0..TOPICS, 0..PARTITIONS as u8).prop_map(|(t, p)| Op::Archive(t, p)),
        1 => (0..TOPICS, 0..PARTITIONS as u8).prop_map(|(t, p)| Op::Merge(t, p)),
        1 => (0..TOPICS, 0..PARTITIONS as u8).prop_map(|(t, p)| Op::Clean(t, p)),
        1 => (0..TOPICS, 0u64..400).prop_map(|(t, b)| Op::Retention(t, b)),
        1 => (0..TOPICS).prop_map(Op::Recreate),
        2 => Just(Op::GcList),
        2 => Just(Op::GcFinish),
        3 => (0u16..700).prop_map(Op::Advance),
    ]
}

struct World {
    m: Metadata,
    /// Object key → last-modified time.
    store: BTreeMap<String, i64>,
    /// Segments written, not yet committed: key, PUT time, chunks.
    pending: Vec<(String, i64, Vec<ChunkCommit>)>,
    listing: Option<Vec<(String, i64)>>,
    now: i64,
    next: u64,
    deleted: usize,
}

fn name(t: u8) -> TopicName {
    TopicName::new(format!("t{t}")).expect("valid name")
}

impl World {
    fn new() -> Self {
        let mut w = Self {
            m: Metadata::default(),
            store: BTreeMap::new(),
            pending: Vec::new(),
            listing: None,
            now: 10_000,
            next: 0,
            deleted: 0,
        };
        for t in 0..TOPICS {
            w.create(t);
        }
        w
    }

    fn create(&mut self, t: u8) {
        self.m.apply(&Command::CreateTopic {
            name: name(t),
            partitions: PARTITIONS,
            config: TopicConfig::default(),
            created_ms: self.now,
        });
    }

    fn key(&mut self, folder: &str) -> String {
        self.next += 1;
        format!("{folder}/{:06}", self.next)
    }

    fn epoch(&mut self, t: u8, p: u32) -> Option<u64> {
        let reply = self.m.apply(&Command::CompactorHeartbeat {
            id: "c".into(),
            now_ms: self.now,
            lease_ms: 300_000,
        });
        let CommandReply::Compactor(lease) = reply else { return None };
        lease.tasks.iter().find(|task| task.topic == name(t) && task.partition == p).map(|task| task.epoch)
    }

    /// Writes a file for `run` of the partition's index and swaps it in.
    fn rewrite(&mut self, t: u8, p: u32, run: &[(u64, ChunkRef)]) -> bool {
        let (Some(first), Some(last), Some(epoch)) = (run.first(), run.last(), self.epoch(t, p)) else {
            return false;
        };
        let Some(topic_id) = self.m.topics.get(&name(t)).map(|s| s.id) else { return false };
        let end = last.0 + u64::from(last.1.record_count);
        let object = self.key(&format!("archive/topic=t{t}/partition={p}"));
        self.store.insert(object.clone(), self.now);
        let chunk = ChunkRef {
            object,
            position: 0,
            len: 100,
            record_count: (end - first.0) as u32,
            max_timestamp_ms: 0,
            committed_ms: 0,
            format: ChunkFormat::Parquet,
        };
        let replace = ReplaceRange {
            topic: name(t),
            topic_id,
            partition: p,
            compactor: "c".into(),
            epoch,
            first_offset: first.0,
            end_offset: end,
            chunk,
            now_ms: self.now,
        };
        self.m.apply(&Command::ReplaceRange(replace)) == CommandReply::Replaced
    }

    fn index(&self, t: u8, p: u32) -> Vec<(u64, ChunkRef)> {
        self.m
            .partition(&name(t), p)
            .map(|s| s.index.iter().map(|(b, c)| (*b, c.clone())).collect())
            .unwrap_or_default()
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Put(chunks) => {
                let key = self.key("segments/00");
                self.store.insert(key.clone(), self.now);
                let chunks = chunks
                    .into_iter()
                    .map(|(t, p, n)| ChunkCommit {
                        topic: name(t),
                        topic_id: self.m.topics.get(&name(t)).map_or(0, |s| s.id),
                        partition: u32::from(p),
                        position: 0,
                        len: 50,
                        record_count: u32::from(n),
                        max_timestamp_ms: 0,
                        request: None,
                    })
                    .collect();
                self.pending.push((key, self.now, chunks));
            }
            Op::Commit(i) if !self.pending.is_empty() => {
                let (object, put_ms, chunks) = self.pending.remove(i % self.pending.len());
                if self.now - put_ms <= COMMIT_WITHIN_MS {
                    let commit = CommitSegment { object, committed_ms: self.now, chunks, requests: vec![] };
                    self.m.apply(&Command::CommitSegment(commit));
                } // else: the gateway gave up (or died); the object is an orphan
            }
            Op::Commit(_) => {}
            Op::Archive(t, p) => {
                let run: Vec<_> = self
                    .index(t, u32::from(p))
                    .into_iter()
                    .skip_while(|(_, c)| c.format == ChunkFormat::Parquet)
                    .take_while(|(_, c)| c.format == ChunkFormat::Segment)
                    .collect();
                self.rewrite(t, u32::from(p), &run);
            }
            Op::Merge(t, p) => {
                // as the compactor: files settled past the grace, deleted once swapped out
                let settled = self.now - GRACE_MS as i64;
                let run: Vec<_> = self
                    .index(t, u32::from(p))
                    .into_iter()
                    .take_while(|(_, c)| c.format == ChunkFormat::Parquet && c.committed_ms <= settled)
                    .collect();
                if run.len() >= 2 && self.rewrite(t, u32::from(p), &run) {
                    for (_, c) in run {
                        self.store.remove(&c.object);
                    }
                }
            }
            Op::Clean(t, p) => {
                // as a cleaning: a settled file rewritten for the same span, the old one deleted
                let settled = self.now - GRACE_MS as i64;
                let file = self
                    .index(t, u32::from(p))
                    .into_iter()
                    .find(|(_, c)| c.format == ChunkFormat::Parquet && c.committed_ms <= settled);
                if let Some(file) = file
                    && self.rewrite(t, u32::from(p), std::slice::from_ref(&file))
                {
                    self.store.remove(&file.1.object);
                }
            }
            Op::Retention(t, bytes) => {
                let patch = serde_json::json!({ "retention_bytes": bytes });
                self.m.apply(&Command::UpdateTopic { name: name(t), config: Some(patch), partitions: None });
                self.m.apply(&Command::ApplyRetention { now_ms: self.now });
            }
            Op::Recreate(t) => {
                self.m.apply(&Command::DeleteTopic { name: name(t) });
                self.create(t);
            }
            Op::GcList => {
                self.listing = Some(self.store.iter().map(|(k, at)| (k.clone(), *at)).collect());
            }
            Op::GcFinish => self.collect(),
            Op::Advance(ms) => self.now += i64::from(ms),
        }
    }

    fn collect(&mut self) {
        let Some(listing) = self.listing.take() else { return };
        let referenced: BTreeSet<String> =
            self.m.referenced_objects().into_iter().map(str::to_owned).collect();
        for path in collectable(&listing, &referenced, self.now, GRACE_MS) {
            if self.store.remove(path).is_some() {
                self.deleted += 1;
            }
        }
    }

    fn missing_referenced(&self) -> Vec<String> {
        self.m
            .referenced_objects()
            .into_iter()
            .filter(|o| !self.store.contains_key(*o))
            .map(str::to_owned)
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn gc_never_deletes_a_referenced_object(ops in proptest::collection::vec(op(), 1..80)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op.clone());
            let missing = w.missing_referenced();
            prop_assert!(missing.is_empty(), "after {:?}: referenced but deleted: {:?}", op, missing);
        }
        // everything ages past the grace: what is left is exactly what the index references
        w.now += GRACE_MS as i64 + COMMIT_WITHIN_MS + 1;
        w.pending.clear();
        w.apply(Op::GcList);
        w.apply(Op::GcFinish);
        let referenced: BTreeSet<String> = w.m.referenced_objects().into_iter().map(str::to_owned).collect();
        let stored: BTreeSet<String> = w.store.keys().cloned().collect();
        prop_assert_eq!(stored, referenced);
    }
}

#[test]
fn collectable_needs_both_unreferenced_and_old() {
    let listed = vec![("a".to_owned(), 0), ("b".to_owned(), 0), ("c".to_owned(), 900)];
    let referenced = BTreeSet::from(["a".to_owned()]);
    assert_eq!(collectable(&listed, &referenced, 1000, 500), ["b"]);
    assert!(collectable(&listed, &referenced, 1000, 5000).is_empty());
}
