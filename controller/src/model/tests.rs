use proptest::prelude::*;
use shale_core::TopicName;

use super::*;
use crate::types::ChunkCommit;

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
    }
}

fn commit(m: &mut Metadata, chunks: Vec<ChunkCommit>) -> Vec<Result<Offset, MetaError>> {
    match m.apply(&Command::CommitSegment(CommitSegment {
        object: "segments/00/x.seg".into(),
        committed_ms: 1,
        chunks,
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

proptest! {
    /// Commands survive a JSON round trip (the log and snapshot encoding).
    #[test]
    fn command_round_trip(count in 1u32..1000, partition in 0u32..8, ts in any::<i64>()) {
        let cmd = Command::CommitSegment(CommitSegment {
            object: "segments/ab/01.seg".into(),
            committed_ms: ts,
            chunks: vec![chunk("t", 1, partition, count)],
        });
        let json = serde_json::to_vec(&cmd).expect("encode");
        prop_assert_eq!(serde_json::from_slice::<Command>(&json).expect("decode"), cmd);
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
        prop_assert_eq!(serde_json::from_slice::<Metadata>(&json).expect("decode"), a);
    }

}
