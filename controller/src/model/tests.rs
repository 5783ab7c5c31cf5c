use proptest::prelude::*;
use shale_core::TopicName;

use super::*;
use crate::types::ChunkCommit;
use shale_controller_client::SegmentOutcomes;

fn name(s: &str) -> TopicName {
    TopicName::new(s).expect("valid name")
}

fn create(m: &mut Metadata, topic: &str, partitions: u32) -> u64 {
    match m.apply(&Command::CreateTopic {
        name: name(topic),
        partitions,
        config: TopicConfig::default(),
        created_ms: 7,
    }) {
        CommandReply::TopicCreated(info) => info.id,
        other => panic!("create failed: {other:?}"),
    }
}

fn chunk(topic: &str, topic_id: u64, partition: u32, count: u32) -> ChunkCommit {
    ChunkCommit {
        topic: name(topic),
        topic_id,
        partition,
        position: 9,
        len: 10,
        record_count: count,
        max_timestamp_ms: 0,
        request: None,
    }
}

fn commit(m: &mut Metadata, chunks: Vec<ChunkCommit>) -> Vec<Result<Offset, MetaError>> {
    match m.apply(&Command::CommitSegment(CommitSegment {
        object: "segments/00/x.seg".into(),
        committed_ms: 1,
        chunks,
        requests: vec![],
    })) {
        CommandReply::Committed(r) => r,
        other => panic!("commit reply {other:?}"),
    }
}

#[test]
fn commit_assigns_dense_offsets_per_partition() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 2);
    let r = commit(&mut m, vec![chunk("t", id, 0, 3), chunk("t", id, 1, 2)]);
    assert_eq!(r, vec![Ok(0), Ok(0)]);
    let r = commit(&mut m, vec![chunk("t", id, 0, 4)]);
    assert_eq!(r, vec![Ok(3)]);
    let p = m.partition(&name("t"), 0).expect("partition");
    assert_eq!(p.high_watermark, 7);
    assert_eq!(p.chunks_from(0, 10).len(), 2);
    assert_eq!(p.chunks_from(4, 10)[0].0, 3);
    assert_eq!(p.chunks_from(2, 10)[0].0, 0);
    assert!(p.chunks_from(7, 10).is_empty());
}

#[test]
fn refused_chunks_do_not_consume_offsets() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 1);
    let r = commit(&mut m, vec![chunk("t", id, 5, 3), chunk("nope", 1, 0, 1), chunk("t", id + 1, 0, 1)]);
    assert!(matches!(r[0], Err(MetaError::PartitionNotFound { .. })));
    assert!(matches!(r[1], Err(MetaError::TopicNotFound(_))));
    assert!(matches!(r[2], Err(MetaError::TopicNotFound(_))));
    assert_eq!(m.partition(&name("t"), 0).expect("p").high_watermark, 0);
}

#[test]
fn topic_lifecycle() {
    let mut m = Metadata::default();
    let first = create(&mut m, "t", 1);
    assert!(matches!(
        m.apply(&Command::CreateTopic {
            name: name("t"),
            partitions: 1,
            config: TopicConfig::default(),
            created_ms: 0
        }),
        CommandReply::Failed(MetaError::TopicExists(_))
    ));
    assert_eq!(m.apply(&Command::DeleteTopic { name: name("t") }), CommandReply::TopicDeleted);
    assert!(matches!(m.apply(&Command::DeleteTopic { name: name("t") }), CommandReply::Failed(_)));
    let second = create(&mut m, "t", 1);
    assert_ne!(first, second, "a re-created topic is a new incarnation");
    let r = commit(&mut m, vec![chunk("t", first, 0, 1)]);
    assert!(r[0].is_err(), "a chunk for the deleted incarnation is refused");
    assert!(matches!(
        m.apply(&Command::CreateTopic {
            name: name("z"),
            partitions: 0,
            config: TopicConfig::default(),
            created_ms: 0
        }),
        CommandReply::Failed(MetaError::Invalid(_))
    ));
}

/// A commit at log time `at` of one request's chunks (and any others).
fn commit_request(
    m: &mut Metadata,
    at: i64,
    chunks: Vec<ChunkCommit>,
    request: crate::types::RequestCommit,
) -> Vec<Result<Offset, MetaError>> {
    match m.apply(&Command::CommitSegment(CommitSegment {
        object: format!("segments/00/{at}.seg"),
        committed_ms: at,
        chunks,
        requests: vec![request],
    })) {
        CommandReply::Committed(r) => r,
        other => panic!("commit reply {other:?}"),
    }
}

fn owned(mut c: ChunkCommit) -> ChunkCommit {
    c.request = Some(0);
    c
}

fn keyed(key: &str, runs: Vec<(u32, u32)>) -> crate::types::RequestCommit {
    crate::types::RequestCommit {
        idempotency_key: Some(key.into()),
        expected_offset: None,
        runs,
        producer: None,
    }
}

#[test]
fn a_repeated_idempotency_key_writes_nothing_and_returns_the_original_offsets() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 2);
    commit(&mut m, vec![chunk("t", id, 0, 5)]);
    // the request: 2 records to partition 1, then 3 to partition 0, then 1 more to partition 1
    let chunks = vec![chunk("t", id, 0, 4), owned(chunk("t", id, 1, 3)), owned(chunk("t", id, 0, 3))];
    let first = commit_request(&mut m, 10, chunks.clone(), keyed("k1", vec![(1, 2), (2, 3), (1, 1)]));
    assert_eq!(first, vec![Ok(5), Ok(0), Ok(9)]);
    let again = commit_request(&mut m, 20, chunks, keyed("k1", vec![(1, 2), (2, 3), (1, 1)]));
    let original = vec![
        OffsetRun { partition: 1, base_offset: 0, count: 2 },
        OffsetRun { partition: 0, base_offset: 9, count: 3 },
        OffsetRun { partition: 1, base_offset: 2, count: 1 },
    ];
    assert_eq!(again[0], Ok(12), "chunks of other requests still commit");
    assert_eq!(again[1], Err(MetaError::Duplicate { offsets: original.clone() }));
    assert_eq!(again[2], Err(MetaError::Duplicate { offsets: original }));
    assert_eq!(m.partition(&name("t"), 1).expect("p").high_watermark, 3, "nothing written twice");
    assert_eq!(m.partition(&name("t"), 0).expect("p").high_watermark, 16);
}

#[test]
fn a_retry_in_the_same_commit_as_its_original_is_written_once() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 1);
    let mut twin = chunk("t", id, 0, 2);
    twin.request = Some(1);
    let reply = m.apply(&Command::CommitSegment(CommitSegment {
        object: "segments/00/x.seg".into(),
        committed_ms: 1,
        chunks: vec![owned(chunk("t", id, 0, 2)), twin],
        requests: vec![keyed("k", vec![(0, 2)]), keyed("k", vec![(1, 2)])],
    }));
    let original = vec![OffsetRun { partition: 0, base_offset: 0, count: 2 }];
    assert_eq!(reply, CommandReply::Committed(vec![Ok(0), Err(MetaError::Duplicate { offsets: original })]));
    assert_eq!(m.partition(&name("t"), 0).expect("p").high_watermark, 2);
}

#[test]
fn an_expected_offset_guards_the_append() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 1);
    let conditional = |expected| crate::types::RequestCommit {
        idempotency_key: None,
        expected_offset: Some(expected),
        runs: vec![(0, 2)],
        producer: None,
    };
    assert_eq!(commit_request(&mut m, 1, vec![owned(chunk("t", id, 0, 2))], conditional(0)), vec![Ok(0)]);
    assert_eq!(
        commit_request(&mut m, 2, vec![owned(chunk("t", id, 0, 2))], conditional(0)),
        vec![Err(MetaError::OffsetMismatch { expected: 0, actual: 2 })]
    );
    assert_eq!(m.partition(&name("t"), 0).expect("p").high_watermark, 2, "a refused append consumes nothing");
    assert_eq!(commit_request(&mut m, 3, vec![owned(chunk("t", id, 0, 2))], conditional(2)), vec![Ok(2)]);
}

#[test]
fn idempotency_keys_expire_in_log_time() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 1);
    commit_request(&mut m, 1_000, vec![owned(chunk("t", id, 0, 1))], keyed("old", vec![(0, 1)]));
    assert_eq!(m.idempotency.len(), 1);
    // within the window a retry is recognized
    let retry = commit_request(
        &mut m,
        1_000 + IDEMPOTENCY_WINDOW_MS,
        vec![owned(chunk("t", id, 0, 1))],
        keyed("old", vec![(0, 1)]),
    );
    assert!(matches!(retry[0], Err(MetaError::Duplicate { .. })));
    // a commit stamped past the window (by any gateway) expires it on every node alike
    let late = commit_request(
        &mut m,
        2_000 + IDEMPOTENCY_WINDOW_MS,
        vec![owned(chunk("t", id, 0, 1))],
        keyed("old", vec![(0, 1)]),
    );
    assert_eq!(late, vec![Ok(1)], "an expired key is a new request");
    // log time never goes back: an older timestamp does not revive anything
    let skewed = commit_request(&mut m, 5, vec![owned(chunk("t", id, 0, 1))], keyed("other", vec![(0, 1)]));
    assert_eq!(skewed, vec![Ok(2)]);
}

#[test]
fn the_window_is_bounded_in_entries() {
    let mut w = IdempotencyWindow::default();
    let t = 1;
    for i in 0..IDEMPOTENCY_MAX_ENTRIES + 10 {
        w.remember(t, &format!("k{i}"), vec![]);
    }
    assert_eq!(w.len(), IDEMPOTENCY_MAX_ENTRIES);
    assert!(w.get(t, "k0").is_none(), "the oldest go first");
    assert!(w.get(t, &format!("k{}", IDEMPOTENCY_MAX_ENTRIES + 9)).is_some());
}

#[test]
fn a_recreated_topic_never_answers_the_old_topics_offsets() {
    let mut m = Metadata::default();
    let old = create(&mut m, "t", 1);
    for _ in 0..3 {
        commit(&mut m, vec![chunk("t", old, 0, 1)]);
    }
    let first = commit_request(&mut m, 10, vec![owned(chunk("t", old, 0, 2))], keyed("k", vec![(0, 2)]));
    assert_eq!(first, vec![Ok(3)]);
    assert!(matches!(m.apply(&Command::DeleteTopic { name: name("t") }), CommandReply::TopicDeleted));
    let new = create(&mut m, "t", 1);
    assert_ne!(new, old);
    // the same key on the new incarnation is a new request, written at its own offsets
    let again = commit_request(&mut m, 11, vec![owned(chunk("t", new, 0, 2))], keyed("k", vec![(0, 2)]));
    assert_eq!(again, vec![Ok(0)], "not the old topic's offset 3");
    let retry = commit_request(&mut m, 12, vec![owned(chunk("t", new, 0, 2))], keyed("k", vec![(0, 2)]));
    assert!(
        matches!(&retry[0], Err(MetaError::Duplicate { offsets }) if offsets[0].base_offset == 0),
        "a retry on the new incarnation answers the new offsets: {retry:?}"
    );
}

#[test]
fn a_guarded_request_over_several_chunks_is_taken_or_refused_whole() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 2);
    // records for partitions 0 and 1, and a third chunk for a partition that does not exist
    let chunks = vec![owned(chunk("t", id, 0, 2)), owned(chunk("t", id, 1, 3)), owned(chunk("t", id, 7, 1))];
    let refused = commit_request(&mut m, 5, chunks, keyed("all-or-nothing", vec![(0, 2), (1, 3), (2, 1)]));
    assert!(refused.iter().all(Result::is_err), "every chunk refused: {refused:?}");
    for p in 0..2 {
        assert_eq!(
            m.partition(&name("t"), p).expect("partition").high_watermark,
            0,
            "nothing appended to {p}"
        );
    }
    // the key was not remembered: a corrected retry is written
    let chunks = vec![owned(chunk("t", id, 0, 2)), owned(chunk("t", id, 1, 3))];
    let taken = commit_request(&mut m, 6, chunks, keyed("all-or-nothing", vec![(0, 2), (1, 3)]));
    assert_eq!(taken, vec![Ok(0), Ok(0)]);
    // a stale incarnation in one chunk refuses the whole request too
    let chunks = vec![owned(chunk("t", id, 0, 1)), owned(chunk("t", id + 100, 1, 1))];
    let stale = commit_request(&mut m, 7, chunks, keyed("mixed", vec![(0, 1), (1, 1)]));
    assert!(stale.iter().all(Result::is_err), "{stale:?}");
    assert_eq!(m.partition(&name("t"), 0).expect("partition").high_watermark, 2);
}

fn update(m: &mut Metadata, config: Option<serde_json::Value>, partitions: Option<u32>) -> CommandReply {
    m.apply(&Command::UpdateTopic { name: name("t"), config, partitions })
}

#[test]
fn a_topic_update_merges_config_and_only_grows_partitions() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 2);
    commit(&mut m, vec![chunk("t", id, 1, 4)]);
    let patch = serde_json::json!({"retention_ms": 60000, "retention_bytes": 1000});
    let CommandReply::TopicUpdated(info) = update(&mut m, Some(patch), Some(5)) else { panic!("update") };
    assert_eq!(info.config.retention_ms, Some(60000));
    assert_eq!(info.partitions.len(), 5);
    assert_eq!(info.partitions[1].high_watermark, 4, "existing partitions keep their data");
    assert_eq!(info.id, id, "the same incarnation");
    // null clears one field and leaves the others
    let CommandReply::TopicUpdated(info) =
        update(&mut m, Some(serde_json::json!({"retention_ms": null})), None)
    else {
        panic!("update")
    };
    assert_eq!((info.config.retention_ms, info.config.retention_bytes), (None, Some(1000)));
    // refused, changing nothing: shrinking, unknown fields, a missing topic
    for (config, partitions) in
        [(None, Some(3)), (Some(serde_json::json!({"retention": 1})), None), (None, Some(10_001))]
    {
        assert!(matches!(update(&mut m, config, partitions), CommandReply::Failed(MetaError::Invalid(_))));
    }
    assert_eq!(m.topic_info(&name("t")).expect("topic").partitions.len(), 5);
    let missing = m.apply(&Command::UpdateTopic { name: name("nope"), config: None, partitions: Some(9) });
    assert!(matches!(missing, CommandReply::Failed(MetaError::TopicNotFound(_))));
    // records can be committed to a new partition
    assert_eq!(commit(&mut m, vec![chunk("t", id, 4, 2)]), vec![Ok(0)]);
}

fn with_retention(
    m: &mut Metadata,
    topic: &str,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
) -> u64 {
    let config = TopicConfig { retention_ms, retention_bytes, ..TopicConfig::default() };
    match m.apply(&Command::CreateTopic { name: name(topic), partitions: 1, config, created_ms: 0 }) {
        CommandReply::TopicCreated(info) => info.id,
        other => panic!("create failed: {other:?}"),
    }
}

fn stamped(topic: &str, id: u64, count: u32, max_timestamp_ms: i64) -> ChunkCommit {
    ChunkCommit { max_timestamp_ms, ..chunk(topic, id, 0, count) }
}

fn log_start(m: &Metadata, topic: &str) -> u64 {
    m.partition(&name(topic), 0).expect("partition").log_start_offset
}

#[test]
fn retention_by_time_drops_whole_old_chunks_from_the_front() {
    let mut m = Metadata::default();
    let id = with_retention(&mut m, "t", Some(1000), None);
    let keep = create(&mut m, "keep", 1);
    for ts in [100, 500, 5000, 200] {
        commit(&mut m, vec![stamped("t", id, 2, ts), stamped("keep", keep, 2, ts)]);
    }
    assert!(m.retention_due(2000));
    assert_eq!(m.apply(&Command::ApplyRetention { now_ms: 2000 }), CommandReply::RetentionApplied(2));
    // only a prefix goes: the old chunk after a young one stays, as in Kafka
    assert_eq!(log_start(&m, "t"), 4);
    assert_eq!(log_start(&m, "keep"), 0, "a topic without retention keeps everything");
    assert!(!m.retention_due(2000), "nothing more to drop");
    assert_eq!(m.apply(&Command::ApplyRetention { now_ms: 2000 }), CommandReply::RetentionApplied(0));
    // later, everything has expired: the log is empty and starts at its end
    m.apply(&Command::ApplyRetention { now_ms: 10_000 });
    let p = m.partition(&name("t"), 0).expect("partition");
    assert_eq!((p.log_start_offset, p.high_watermark, p.index.len()), (8, 8, 0));
    assert_eq!(commit(&mut m, vec![stamped("t", id, 1, 10_000)]), vec![Ok(8)], "offsets go on");
}

#[test]
fn retention_by_size_never_goes_below_the_limit() {
    let mut m = Metadata::default();
    // each test chunk holds 10 stored bytes
    let id = with_retention(&mut m, "t", None, Some(25));
    for _ in 0..5 {
        commit(&mut m, vec![stamped("t", id, 3, 0)]);
    }
    assert_eq!(m.apply(&Command::ApplyRetention { now_ms: 0 }), CommandReply::RetentionApplied(2));
    let p = m.partition(&name("t"), 0).expect("partition");
    assert_eq!(
        (p.log_start_offset, p.index.len()),
        (6, 3),
        "30 of 50 bytes kept: never below the 25-byte limit"
    );
    assert!(!m.retention_due(0));
}

#[test]
fn retention_applies_only_to_cleanup_policies_that_delete() {
    let mut m = Metadata::default();
    let id = with_retention(&mut m, "t", Some(1000), None);
    commit(&mut m, vec![stamped("t", id, 2, 100)]);
    let patch = |policy: &str| Command::UpdateTopic {
        name: name("t"),
        config: Some(serde_json::json!({"cleanup_policy": policy})),
        partitions: None,
    };
    assert!(matches!(m.apply(&patch("compact")), CommandReply::TopicUpdated(_)));
    assert!(!m.retention_due(5000), "a compact topic keeps every key's latest record");
    assert_eq!(m.apply(&Command::ApplyRetention { now_ms: 5000 }), CommandReply::RetentionApplied(0));
    assert!(matches!(m.apply(&patch("delete,compact")), CommandReply::TopicUpdated(_)));
    let info = m.topic_info(&name("t")).expect("topic");
    assert_eq!(info.config.cleanup_policy, CleanupPolicy::CompactDelete, "Kafka's spelling either way round");
    assert!(m.retention_due(5000));
    assert!(matches!(m.apply(&patch("forever")), CommandReply::Failed(MetaError::Invalid(_))));
}

proptest! {
    /// Commands survive a round trip in JSON (the log) and MessagePack (Raft
    /// RPCs and snapshots).
    #[test]
    fn command_round_trip(count in 1u32..1000, partition in 0u32..8, ts in any::<i64>(), guarded: bool) {
        let cmd = Command::CommitSegment(CommitSegment {
            object: "segments/ab/01.seg".into(),
            committed_ms: ts,
            chunks: vec![chunk("t", 1, partition, count)],
            requests: if guarded { vec![keyed("k", vec![(0, count)])] } else { vec![] },
        });
        let json = serde_json::to_vec(&cmd).expect("encode");
        prop_assert_eq!(&serde_json::from_slice::<Command>(&json).expect("decode"), &cmd);
        let packed = rmp_serde::to_vec_named(&cmd).expect("encode");
        prop_assert_eq!(rmp_serde::from_slice::<Command>(&packed).expect("decode"), cmd);
    }

    /// Applying the same commands to two copies gives the same state.
    #[test]
    fn apply_is_deterministic(counts in proptest::collection::vec((0u32..3, 1u32..50), 1..40)) {
        let mut a = Metadata::default();
        let id = create(&mut a, "t", 3);
        let mut b = a.clone();
        for (p, n) in counts {
            let c = vec![chunk("t", id, p, n)];
            prop_assert_eq!(commit(&mut a, c.clone()), commit(&mut b, c));
        }
        prop_assert_eq!(&a, &b);
        let json = serde_json::to_vec(&a).expect("encode");
        prop_assert_eq!(&serde_json::from_slice::<Metadata>(&json).expect("decode"), &a);
        let packed = rmp_serde::to_vec_named(&a).expect("encode");
        prop_assert_eq!(rmp_serde::from_slice::<Metadata>(&packed).expect("decode"), a);
    }

}

fn segment(at: i64, chunks: Vec<ChunkCommit>, requests: Vec<crate::types::RequestCommit>) -> CommitSegment {
    CommitSegment { object: format!("segments/00/{at}.seg"), committed_ms: at, chunks, requests }
}

#[test]
fn a_group_commit_applies_like_its_segments_one_after_another() {
    let segments = vec![
        segment(1, vec![chunk("t", 1, 0, 3), chunk("t", 1, 1, 2)], vec![]),
        segment(2, vec![chunk("t", 1, 0, 4), chunk("t", 9, 1, 1)], vec![]),
        segment(3, vec![owned(chunk("t", 1, 1, 5))], vec![keyed("k", vec![(0, 5)])]),
        // a retry of the request just before it, in the same entry
        segment(4, vec![owned(chunk("t", 1, 1, 5))], vec![keyed("k", vec![(0, 5)])]),
    ];
    let mut one_by_one = Metadata::default();
    create(&mut one_by_one, "t", 2);
    let replies: Vec<SegmentOutcomes> = segments
        .iter()
        .map(|s| match one_by_one.apply(&Command::CommitSegment(s.clone())) {
            CommandReply::Committed(r) => r,
            other => panic!("commit reply {other:?}"),
        })
        .collect();
    let mut grouped = Metadata::default();
    create(&mut grouped, "t", 2);
    let reply = grouped.apply(&Command::CommitSegments(segments));
    assert_eq!(reply, CommandReply::CommittedSegments(replies.clone()));
    assert_eq!(replies[0], vec![Ok(0), Ok(0)]);
    assert!(matches!(replies[1][..], [Ok(3), Err(MetaError::TopicNotFound(_))]), "{:?}", replies[1]);
    assert_eq!(replies[2], vec![Ok(2)]);
    let original = vec![OffsetRun { partition: 1, base_offset: 2, count: 5 }];
    assert_eq!(replies[3], vec![Err(MetaError::Duplicate { offsets: original })]);
    for m in [&one_by_one, &grouped] {
        assert_eq!(m.partition(&name("t"), 0).expect("p").high_watermark, 7);
        assert_eq!(m.partition(&name("t"), 1).expect("p").high_watermark, 7);
    }
}

#[test]
fn delete_records_moves_the_log_start_and_drops_whole_chunks_below_it() {
    let mut m = Metadata::default();
    let id = create(&mut m, "t", 1);
    for _ in 0..3 {
        commit(&mut m, vec![chunk("t", id, 0, 4)]);
    }
    let delete = |m: &mut Metadata, before| {
        m.apply(&Command::DeleteRecords { topic: name("t"), partition: 0, before })
    };
    // into the middle of the second chunk: the first goes, the second stays
    assert!(matches!(delete(&mut m, 6), CommandReply::TopicUpdated(_)));
    let p = m.partition(&name("t"), 0).expect("partition");
    assert_eq!((p.log_start_offset, p.index.keys().copied().collect::<Vec<_>>()), (6, vec![4, 8]));
    // never back, never past the high watermark
    delete(&mut m, 2);
    assert_eq!(log_start(&m, "t"), 6);
    assert!(matches!(delete(&mut m, 13), CommandReply::Failed(MetaError::Invalid(_))));
    // up to the high watermark: nothing is left, and offsets go on
    delete(&mut m, 12);
    let p = m.partition(&name("t"), 0).expect("partition");
    assert_eq!((p.log_start_offset, p.index.len()), (12, 0));
    assert_eq!(commit(&mut m, vec![chunk("t", id, 0, 1)]), vec![Ok(12)]);
}
