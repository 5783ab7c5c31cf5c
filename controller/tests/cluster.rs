//! Three real openraft controller nodes talking HTTP on 127.0.0.1: they
//! bootstrap themselves, elect a leader, replicate commits, and fail over when
//! the leader dies, with offsets continuing and never reused.

// A test: a failed expectation should panic with its message.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use shale_controller::network::raft_router;
use shale_controller::{
    ChunkCommit, CommitSegment, Controller, ControllerError, ControllerNode, NodeConfig, TopicConfig,
};
use shale_core::TopicName;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

struct Member {
    node: ControllerNode,
    server: JoinHandle<()>,
    _dir: TempDir,
}

fn topic() -> TopicName {
    TopicName::new("orders").expect("valid")
}

fn segment(topic_id: u64, n: u32) -> CommitSegment {
    CommitSegment {
        object: format!("segments/00/{n}.seg"),
        committed_ms: i64::from(n),
        chunks: vec![ChunkCommit {
            topic: topic(),
            topic_id,
            partition: 0,
            position: 9,
            len: 10,
            record_count: 3,
            max_timestamp_ms: 0,
            request: None,
        }],
        requests: vec![],
    }
}

/// Polls `check` until it is true or 15 s pass.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The member that leads, as every live member sees it.
fn leader(members: &[Option<Member>]) -> Option<usize> {
    let live: Vec<(usize, &Member)> =
        members.iter().enumerate().filter_map(|(i, m)| Some((i, m.as_ref()?))).collect();
    let views: Vec<Option<u64>> =
        live.iter().map(|(_, m)| m.node.raft().metrics().borrow().current_leader).collect();
    let first = (*views.first()?)?;
    if views.iter().all(|v| *v == Some(first)) {
        live.iter().find(|(_, m)| m.node.id() == first).map(|(i, _)| *i)
    } else {
        None
    }
}

async fn high_watermark(node: &ControllerNode) -> u64 {
    node.describe_topic(&topic()).await.map_or(0, |t| t.partitions[0].high_watermark)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_fail_over() {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let peers: BTreeMap<u64, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
        .collect();
    let mut members: Vec<Option<Member>> = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = NodeConfig::new(i as u64 + 1, dir.path().to_owned());
        let node = ControllerNode::start_cluster(config, peers.clone()).await.expect("start");
        let app = raft_router(node.raft().clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        members.push(Some(Member { node, server, _dir: dir }));
    }

    eventually("a leader all agree on", async || leader(&members).is_some()).await;
    let first = leader(&members).expect("leader");
    let leader_node = members[first].as_ref().expect("live").node.clone();
    let follower = members.iter().flatten().find(|m| m.node.id() != leader_node.id()).expect("follower");
    let refused = follower.node.create_topic(topic(), 1, TopicConfig::default(), 0).await;
    let hint = Some(peers[&leader_node.id()].clone());
    assert!(
        matches!(&refused, Err(ControllerError::NotLeader { leader }) if *leader == hint),
        "a follower does not take writes and names the leader: {refused:?}"
    );

    let info = leader_node.create_topic(topic(), 1, TopicConfig::default(), 0).await.expect("create");
    for n in 0..3 {
        let outcome = leader_node.commit_segment(segment(info.id, n)).await.expect("commit");
        assert_eq!(outcome, vec![Ok(u64::from(n) * 3)]);
    }
    for m in members.iter().flatten() {
        eventually("every node applies the commits", async || high_watermark(&m.node).await == 9).await;
    }

    // the leader dies
    let dead = members[first].take().expect("live");
    dead.server.abort();
    dead.node.shutdown().await;
    eventually("a new leader among the survivors", async || leader(&members).is_some()).await;
    let second = leader(&members).expect("new leader");
    let new_leader = members[second].as_ref().expect("live").node.clone();
    assert_ne!(new_leader.id(), dead.node.id());
    let outcome = new_leader.commit_segment(segment(info.id, 3)).await.expect("commit after failover");
    assert_eq!(outcome, vec![Ok(9)], "offsets continue after failover, none reused");
    for m in members.iter().flatten() {
        eventually("the survivors apply it", async || high_watermark(&m.node).await == 12).await;
    }
}
