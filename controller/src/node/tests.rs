//! A real single-node openraft controller on a temporary directory.

use std::time::Duration;

use shale_core::TopicName;

use super::*;
use crate::model::TopicConfig;
use crate::types::{ChunkCommit, CommitSegment};

fn topic() -> TopicName {
    TopicName::new("orders").expect("valid")
}

fn commit(topic_id: u64, partition: u32, count: u32) -> CommitSegment {
    CommitSegment {
        object: format!("segments/00/{partition}-{count}.seg"),
        committed_ms: 5,
        chunks: vec![ChunkCommit {
            topic: topic(),
            topic_id,
            partition,
            position: 9,
            len: 100,
            record_count: count,
            max_timestamp_ms: 5,
            request: None,
        }],
        requests: vec![],
    }
}

#[tokio::test]
async fn state_survives_restart_through_snapshot_and_purged_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = NodeConfig::new(1, dir.path().to_owned());
    config.snapshot_every = 20;
    config.keep_behind_snapshot = 5;

    let node = ControllerNode::start_single(config.clone()).await.expect("start");
    let info = node.create_topic(topic(), 2, TopicConfig::default(), 1).await.expect("create");
    let mut expected = 0;
    for i in 0..60 {
        let outcome = node.commit_segment(commit(info.id, 0, 3)).await.expect("commit");
        assert_eq!(outcome, vec![Ok(expected)], "commit {i}");
        expected += 3;
    }
    // snapshots were built and the log was purged behind them
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= 40), "snapshot built")
        .await
        .expect("snapshot");
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some(), "log purged")
        .await
        .expect("purged");
    node.shutdown().await;
    drop(node);

    let node = ControllerNode::start_single(config).await.expect("restart");
    let described = node.describe_topic(&topic()).await.expect("describe");
    assert_eq!(described.partitions[0].high_watermark, 180);
    assert_eq!(described.partitions[1].high_watermark, 0);
    let read = node.read_partition(&topic(), 0, 100, 3, Duration::ZERO).await.expect("read");
    assert_eq!(read.chunks[0].base_offset, 99);
    assert_eq!(read.chunks.len(), 3);
    let outcome = node.commit_segment(commit(info.id, 0, 1)).await.expect("commit after restart");
    assert_eq!(outcome, vec![Ok(180)], "offsets continue, never reused");
    node.shutdown().await;
}

#[tokio::test]
async fn read_partition_long_polls_until_a_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned())).await.expect("start");
    let info = node.create_topic(topic(), 1, TopicConfig::default(), 1).await.expect("create");

    let started = Instant::now();
    let empty = node.read_partition(&topic(), 0, 0, 1, Duration::from_millis(200)).await.expect("read");
    assert!(empty.chunks.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(190), "waited for wait_ms");

    let reader = node.clone();
    let waiting =
        tokio::spawn(async move { reader.read_partition(&topic(), 0, 0, 1, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    node.commit_segment(commit(info.id, 0, 2)).await.expect("commit");
    let read = waiting.await.expect("join").expect("read");
    assert_eq!(read.high_watermark, 2);
    assert!(started.elapsed() < Duration::from_secs(2), "woke on commit");

    let err = node.read_partition(&topic(), 7, 0, 1, Duration::ZERO).await;
    assert!(matches!(err, Err(ControllerError::Meta(MetaError::PartitionNotFound { .. }))));
    node.shutdown().await;
}

/// Snapshot keys in the bucket.
async fn bucket_snapshots(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from("controller/snapshots");
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    objects.into_iter().map(|o| o.location.to_string()).collect()
}

#[tokio::test]
async fn a_node_with_an_empty_data_directory_starts_from_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).expect("bucket dir");
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&bucket).expect("local store"));
    let mut config = NodeConfig::new(1, dir.path().join("node-a"));
    config.snapshot_every = 10;
    config.store = Some(store.clone());

    let node = ControllerNode::start_single(config.clone()).await.expect("start");
    let info = node.create_topic(topic(), 2, TopicConfig::default(), 1).await.expect("create");
    // five rounds of commits, each ending in a snapshot the leader copies to
    // the bucket; the newest three are kept
    for round in 0..5 {
        for _ in 0..5 {
            node.commit_segment(commit(info.id, 1, 2)).await.expect("commit");
        }
        node.raft().trigger().snapshot().await.expect("trigger");
        let last = node.raft().metrics().borrow().last_applied.expect("applied").index;
        let newest = format!("-{last}.snap");
        // the upload puts the new snapshot, then prunes: wait for both
        let mut keys = Vec::new();
        for _ in 0..100 {
            keys = bucket_snapshots(&store).await;
            if keys.iter().any(|k| k.ends_with(&newest)) && keys.len() <= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(keys.iter().any(|k| k.ends_with(&newest)), "round {round}: index {last} in {keys:?}");
        assert!(keys.len() <= 3, "older snapshots are pruned: {keys:?}");
    }
    assert_eq!(bucket_snapshots(&store).await.len(), 3);
    node.shutdown().await;
    drop(node);

    // a replacement node with nothing on disk
    config.data_dir = dir.path().join("node-b");
    let node = ControllerNode::start_single(config.clone()).await.expect("start from the bucket");
    let p = node.describe_topic(&topic()).await.expect("topic restored").partitions;
    assert_eq!(p[1].high_watermark, 50, "every commit is in the restored state");
    let next = node.commit_segment(commit(info.id, 1, 2)).await.expect("commit after restore");
    assert_eq!(next, vec![Ok(50)], "offsets go on from the restored state");
    // the sole voter of its cluster has no one to wait for (a member of a
    // larger cluster abstains: tests/tests/cluster.rs)
    assert!(node.recovery().may_vote());
    assert!(!config.data_dir.join(RESTORING_MARKER).exists());
    node.shutdown().await;
    drop(node);
    let node = ControllerNode::start_single(config).await.expect("restart");
    let p = node.describe_topic(&topic()).await.expect("own state").partitions;
    assert_eq!(p[1].high_watermark, 52, "its own log, not the bucket, after the restart");
    node.shutdown().await;
}

/// A data directory holding only a snapshot of a three-voter cluster (as a
/// restore from the bucket leaves it), with or without the restore marker.
fn restored_dir(dir: &std::path::Path, marked: bool) -> NodeConfig {
    use crate::store::{StateMachineData, encode_snapshot};
    use crate::types::{LogId, SnapshotMeta, StoredMembership};
    let nodes: BTreeMap<NodeId, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 9 + id)))).collect();
    let last = LogId::new(openraft::CommittedLeaderId::new(2, 1), 40);
    let membership =
        StoredMembership::new(Some(LogId::new(openraft::CommittedLeaderId::new(0, 0), 0)), nodes.into());
    let data =
        StateMachineData { last_applied: Some(last), membership: membership.clone(), ..Default::default() };
    let meta =
        SnapshotMeta { last_log_id: Some(last), last_membership: membership, snapshot_id: "2-40".into() };
    let bytes = encode_snapshot(&meta, &serde_json::to_vec(&data).expect("json")).expect("encode");
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(dir.join("state").join(crate::store::SNAPSHOT_FILE), bytes).expect("snapshot");
    if marked {
        std::fs::write(dir.join(RESTORING_MARKER), b"").expect("marker");
    }
    NodeConfig::new(2, dir.to_owned())
}

#[tokio::test]
async fn a_restored_cluster_member_stands_for_no_election_until_caught_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, format!("127.0.0.1:{}", 9 + id))).collect();
    // restored (marker present, e.g. after a crash mid-recovery): abstains
    let abstaining = ControllerNode::start_cluster(restored_dir(&dir.path().join("a"), true), peers.clone())
        .await
        .expect("a");
    // the same state without the marker: an ordinary member
    let ordinary =
        ControllerNode::start_cluster(restored_dir(&dir.path().join("b"), false), peers).await.expect("b");
    tokio::time::sleep(Duration::from_millis(1500)).await; // > 2 election timeouts
    assert!(!abstaining.recovery().may_vote());
    assert_eq!(abstaining.raft().metrics().borrow().current_term, 0, "the abstaining node never campaigned");
    assert!(ordinary.recovery().may_vote());
    assert!(
        ordinary.raft().metrics().borrow().current_term > 0,
        "the ordinary node campaigns (and fails alone)"
    );
    abstaining.shutdown().await;
    ordinary.shutdown().await;
}

#[tokio::test]
async fn the_idempotency_window_runs_on_the_leaders_clock_not_the_gateways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned())).await.expect("start");
    let info = node.create_topic(topic(), 1, TopicConfig::default(), 1).await.expect("create");
    let keyed = |committed_ms: i64| {
        let mut c = commit(info.id, 0, 2);
        c.committed_ms = committed_ms;
        c.chunks[0].request = Some(0);
        c.requests = vec![crate::types::RequestCommit {
            idempotency_key: Some("k".into()),
            expected_offset: None,
            runs: vec![(0, 2)],
            producer: None,
        }];
        c
    };
    assert_eq!(node.commit_segment(keyed(0)).await.expect("commit"), vec![Ok(0)]);
    // a gateway whose clock runs a year ahead commits something else...
    let year_ms = 365 * 24 * 3600 * 1000;
    let mut skewed = commit(info.id, 0, 1);
    skewed.committed_ms = SystemClock.now_ms() + year_ms;
    node.commit_segment(skewed).await.expect("commit");
    // ...and the key is still remembered: a retry writes nothing
    let retry = node.commit_segment(keyed(SystemClock.now_ms() + year_ms)).await.expect("commit");
    assert!(
        matches!(&retry[0], Err(MetaError::Duplicate { offsets }) if offsets[0].base_offset == 0),
        "the skewed clock did not expire the window: {retry:?}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_group_commit_gives_offsets_in_order_and_is_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned())).await.expect("start");
    let info = node.create_topic(topic(), 2, TopicConfig::default(), 1).await.expect("create");
    let group = vec![commit(info.id, 0, 3), commit(info.id, 1, 2), commit(info.id, 0, 4)];
    let outcomes = node.commit_segments(group).await.expect("group commit");
    assert_eq!(outcomes, vec![vec![Ok(0)], vec![Ok(0)], vec![Ok(3)]]);
    let read = node.read_partition(&topic(), 0, 0, 10, Duration::ZERO).await.expect("read");
    assert_eq!(read.high_watermark, 7);
    assert_eq!(read.chunks.iter().map(|c| c.base_offset).collect::<Vec<_>>(), vec![0, 3]);
    node.shutdown().await;
}

#[tokio::test]
async fn an_oversized_command_is_refused_and_the_node_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = ControllerNode::start_single(NodeConfig::new(1, dir.path().to_owned())).await.expect("start");
    let info = node.create_topic(topic(), 1, TopicConfig::default(), 1).await.expect("create");
    let huge = serde_json::json!({ "padding": "x".repeat(9 << 20) });
    let refused = node.update_topic(topic(), Some(huge), None).await;
    assert!(matches!(refused, Err(ControllerError::Meta(MetaError::Invalid(_)))), "{refused:?}");
    let outcome = node.commit_segment(commit(info.id, 0, 2)).await.expect("a commit after the refusal");
    assert_eq!(outcome, vec![Ok(0)]);
    node.shutdown().await;
}
