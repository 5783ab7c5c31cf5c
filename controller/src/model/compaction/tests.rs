use shale_core::TopicName;

use super::*;
use crate::model::{ChunkFormat, TopicConfig};
use crate::types::{ChunkCommit, Command, CommandReply, CommitSegment};

fn name(s: &str) -> TopicName {
    TopicName::new(s).expect("valid name")
}

fn setup(partitions: u32) -> (Metadata, u64) {
    let mut m = Metadata::default();
    let reply = m.apply(&Command::CreateTopic {
        name: name("t"),
        partitions,
        config: TopicConfig::default(),
        created_ms: 0,
    });
    let CommandReply::TopicCreated(info) = reply else { panic!("create: {reply:?}") };
    (m, info.id)
}

fn commit(m: &mut Metadata, id: u64, object: &str, counts: &[u32]) {
    let chunks = counts
        .iter()
        .map(|n| ChunkCommit {
            topic: name("t"),
            topic_id: id,
            partition: 0,
            position: 0,
            len: 100,
            record_count: *n,
            max_timestamp_ms: 5,
            request: None,
        })
        .collect();
    let reply = m.apply(&Command::CommitSegment(CommitSegment {
        object: object.into(),
        committed_ms: 1,
        chunks,
        requests: vec![],
    }));
    assert!(matches!(reply, CommandReply::Committed(_)), "{reply:?}");
}

fn beat(m: &mut Metadata, id: &str, now_ms: i64) -> CompactorLease {
    match m.apply(&Command::CompactorHeartbeat { id: id.into(), now_ms, lease_ms: 1000 }) {
        CommandReply::Compactor(lease) => lease,
        other => panic!("heartbeat: {other:?}"),
    }
}

fn file(records: u32) -> ChunkRef {
    ChunkRef {
        object: "archive/topic=t/partition=0/f.parquet".into(),
        position: 0,
        len: 500,
        record_count: records,
        max_timestamp_ms: 5,
        committed_ms: 0,
        format: ChunkFormat::Parquet,
    }
}

fn replace(m: &mut Metadata, id: u64, who: &str, epoch: u64, range: (u64, u64)) -> CommandReply {
    m.apply(&Command::ReplaceRange(ReplaceRange {
        topic: name("t"),
        topic_id: id,
        partition: 0,
        compactor: who.into(),
        epoch,
        first_offset: range.0,
        end_offset: range.1,
        chunk: file((range.1 - range.0) as u32),
        now_ms: 77,
    }))
}

#[test]
fn compactors_split_partitions_and_each_gets_its_own_epochs() {
    let (mut m, _) = setup(4);
    let a = beat(&mut m, "a", 0);
    assert_eq!(a.tasks.len(), 4, "a lone compactor holds every partition");
    assert!(a.collector);
    let b = beat(&mut m, "b", 0);
    assert_eq!(b.tasks.len(), 2, "a second compactor takes half");
    assert!(!b.collector, "one collector: the first by id");
    let a = beat(&mut m, "a", 0);
    assert_eq!(a.tasks.len(), 2);
    let mine: BTreeSet<u32> = a.tasks.iter().chain(&b.tasks).map(|t| t.partition).collect();
    assert_eq!(mine.len(), 4, "no partition is held twice");
    // gateway leadership is untouched by compactors
    assert!(m.topics[&name("t")].partitions.iter().all(|p| p.leader.is_none()));
    // b's lease ends: a takes everything back, with new epochs
    let gone = m.apply(&Command::ExpireGateways { now_ms: 1000 });
    assert_eq!(gone, CommandReply::GatewaysGone(vec!["a".into(), "b".into()]));
    let a = beat(&mut m, "a", 2000);
    assert_eq!(a.tasks.len(), 4);
}

#[test]
fn a_swap_replaces_exactly_the_run_it_names() {
    let (mut m, id) = setup(1);
    commit(&mut m, id, "segments/00/a.seg", &[3]);
    commit(&mut m, id, "segments/00/b.seg", &[2]);
    commit(&mut m, id, "segments/00/c.seg", &[4]);
    let lease = beat(&mut m, "a", 0);
    let epoch = lease.tasks[0].epoch;
    assert_eq!(replace(&mut m, id, "a", epoch, (0, 5)), CommandReply::Replaced);
    let p = m.partition(&name("t"), 0).expect("partition");
    let entries: Vec<(u64, ChunkFormat, i64)> =
        p.index.iter().map(|(b, c)| (*b, c.format, c.committed_ms)).collect();
    assert_eq!(entries, [(0, ChunkFormat::Parquet, 77), (5, ChunkFormat::Segment, 1)]);
    assert_eq!(p.high_watermark, 9, "offsets never change");
    assert_eq!(p.chunks_from(4, 10)[0].0, 0, "offset 4 is read from the file");
    let objects: Vec<&str> = m.referenced_objects().into_iter().collect();
    assert_eq!(objects, ["archive/topic=t/partition=0/f.parquet", "segments/00/c.seg"]);
    assert_eq!(m.index_entries(), 2);
}

#[test]
fn a_swap_is_refused_unless_the_lease_and_the_run_are_as_read() {
    let (mut m, id) = setup(1);
    commit(&mut m, id, "segments/00/a.seg", &[3, 2]);
    let epoch = beat(&mut m, "a", 0).tasks[0].epoch;
    let before = m.clone();
    let fenced = |r: CommandReply| matches!(r, CommandReply::Failed(MetaError::Fenced(_)));
    assert!(fenced(replace(&mut m, id, "b", epoch, (0, 5))), "another compactor");
    assert!(fenced(replace(&mut m, id, "a", epoch + 1, (0, 5))), "another epoch");
    assert!(fenced(replace(&mut m, id, "a", epoch, (1, 5))), "not on an entry boundary");
    assert!(fenced(replace(&mut m, id, "a", epoch, (0, 4))), "ends inside an entry");
    assert!(fenced(replace(&mut m, id, "a", epoch, (0, 9))), "beyond the index");
    let reply = replace(&mut m, id + 1, "a", epoch, (0, 5));
    assert!(matches!(reply, CommandReply::Failed(MetaError::TopicNotFound(_))), "another incarnation");
    assert_eq!(m, before, "refusals change nothing");
    // the lease moves: the old holder's epoch is stale
    beat(&mut m, "b", 0);
    m.apply(&Command::CompactorLeave { id: "a".into() });
    assert!(fenced(replace(&mut m, id, "a", epoch, (0, 5))));
    let b_epoch = beat(&mut m, "b", 0).tasks[0].epoch;
    assert!(b_epoch > epoch);
    assert_eq!(replace(&mut m, id, "b", b_epoch, (0, 5)), CommandReply::Replaced);
}

#[test]
fn retention_drops_archive_files_whole() {
    let (mut m, id) = setup(1);
    commit(&mut m, id, "segments/00/a.seg", &[3, 2]);
    commit(&mut m, id, "segments/00/b.seg", &[4]);
    let epoch = beat(&mut m, "a", 0).tasks[0].epoch;
    assert_eq!(replace(&mut m, id, "a", epoch, (0, 5)), CommandReply::Replaced);
    let patch = serde_json::json!({"retention_bytes": 100});
    m.apply(&Command::UpdateTopic { name: name("t"), config: Some(patch), partitions: None });
    m.apply(&Command::ApplyRetention { now_ms: 10 });
    let p = m.partition(&name("t"), 0).expect("partition");
    assert_eq!(p.log_start_offset, 5, "the 500-byte file went whole");
    let objects: Vec<&str> = m.referenced_objects().into_iter().collect();
    assert_eq!(objects, ["segments/00/b.seg"]);
}

#[test]
fn a_segment_written_too_long_ago_is_refused_whole() {
    let (mut m, id) = setup(1);
    let key = |ms: u64| shale_core::keys::segment_key(ulid::Ulid::from_parts(ms, 1)).to_string();
    let chunk = ChunkCommit {
        topic: name("t"),
        topic_id: id,
        partition: 0,
        position: 0,
        len: 10,
        record_count: 2,
        max_timestamp_ms: 0,
        request: None,
    };
    let commit = |m: &mut Metadata, object: String, committed_ms: i64| {
        let c = CommitSegment { object, committed_ms, chunks: vec![chunk.clone()], requests: vec![] };
        m.apply(&Command::CommitSegment(c))
    };
    let now = 10 * crate::model::MAX_COMMIT_DELAY_MS;
    let fresh = commit(&mut m, key(now as u64 - 1000), now);
    assert_eq!(fresh, CommandReply::Committed(vec![Ok(0)]));
    let stale = commit(&mut m, key((now - crate::model::MAX_COMMIT_DELAY_MS - 1) as u64), now);
    assert!(matches!(stale, CommandReply::Committed(r) if matches!(r[0], Err(MetaError::SegmentExpired(_)))));
    assert_eq!(m.partition(&name("t"), 0).expect("partition").high_watermark, 2, "nothing appended");
}
