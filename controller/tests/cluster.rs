//! Three real openraft controller nodes talking HTTP on 127.0.0.1 with a
//! cluster secret: they bootstrap themselves, elect a leader, replicate
//! commits, and fail over when the leader dies, with offsets continuing and
//! never reused. Requests without the secret, and nodes that claim another
//! node's id, change nothing.

// A test: a failed expectation should panic with its message.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use shale_controller::api::controller_router;
use shale_controller::{
    ChunkCommit, CommitSegment, Controller, ControllerError, ControllerNode, NodeConfig, PeerAccess,
    TopicConfig,
};
use shale_controller_client::ClusterSecret;
use shale_core::TopicName;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio::time::Instant;

struct Member {
    node: ControllerNode,
    server: JoinHandle<()>,
    _dir: TempDir,
}

const SECRET: &str = "test-cluster-secret-0123456789";

fn access() -> PeerAccess {
    PeerAccess { secret: Some(ClusterSecret::new(SECRET).expect("valid")), ..PeerAccess::default() }
}

/// A client that presents the cluster secret.
fn authorized() -> reqwest::Client {
    access().client().expect("client")
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

/// Starts node `id` of a cluster with `peers`, serving Raft and the API on `listener`.
async fn start(id: u64, peers: &BTreeMap<u64, String>, listener: tokio::net::TcpListener) -> Member {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig { peers: access(), ..NodeConfig::new(id, dir.path().to_owned()) };
    let node = ControllerNode::start_cluster(config, peers.clone()).await.expect("start");
    let app = controller_router(node.clone(), access());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Member { node, server, _dir: dir }
}

async fn listeners(n: usize) -> Vec<tokio::net::TcpListener> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_catches_up_and_another_leaves() {
    let mut ls = listeners(4).await;
    let fourth = ls.pop().expect("listener");
    let mut peers: BTreeMap<u64, String> = ls
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
        .collect();
    let mut members: Vec<Option<Member>> = Vec::new();
    for (i, l) in ls.into_iter().enumerate() {
        members.push(Some(start(i as u64 + 1, &peers, l).await));
    }
    eventually("a leader", async || leader(&members).is_some()).await;
    let leader_node = members[leader(&members).expect("leader")].as_ref().expect("live").node.clone();
    let info = leader_node.create_topic(topic(), 1, TopicConfig::default(), 0).await.expect("create");
    for n in 0..2 {
        leader_node.commit_segment(segment(info.id, n)).await.expect("commit");
    }

    // node 4 joins: it knows the cluster; the cluster learns of it by a membership change
    let addr4 = fourth.local_addr().expect("addr").to_string();
    peers.insert(4, addr4.clone());
    let joined = start(4, &peers, fourth).await;
    // the leader asks the node at the address who it is: claiming another id is refused
    let leader_addr = peers[&leader_node.id()].clone();
    let post_change = |change: serde_json::Value| {
        let url = format!("http://{leader_addr}/api/members");
        async move {
            authorized().post(url).json(&change).send().await.expect("send").json::<serde_json::Value>().await
        }
    };
    let wrong = post_change(serde_json::json!({"add": {"id": 5, "addr": addr4}})).await.expect("json");
    assert!(wrong["Err"].to_string().contains("is node 4, not 5"), "{wrong}");
    let taken = post_change(serde_json::json!({"add": {"id": 2, "addr": addr4}})).await.expect("json");
    assert!(taken.get("Err").is_some(), "node 2's id at node 4's address: {taken}");
    assert_eq!(leader_node.voters(), [1, 2, 3].into_iter().collect(), "neither changed membership");
    leader_node.add_node(4, addr4).await.expect("add node 4");
    assert_eq!(leader_node.voters(), [1, 2, 3, 4].into_iter().collect());
    eventually("node 4 catches up", async || high_watermark(&joined.node).await == 6).await;

    // a follower leaves; the remaining three go on, node 4 among them
    let leaving = (1..=3).find(|id| *id != leader_node.id()).expect("a follower");
    // through the HTTP API, as an operator would
    let answer: serde_json::Value = authorized()
        .post(format!("http://{}/api/members", peers[&leader_node.id()]))
        .json(&serde_json::json!({"remove": {"id": leaving}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer, serde_json::json!({"Ok": null}), "remove node {leaving}");
    assert!(!leader_node.voters().contains(&leaving));
    assert_eq!(leader_node.voters().len(), 3);
    let outcome = leader_node.commit_segment(segment(info.id, 2)).await.expect("commit after the change");
    assert_eq!(outcome, vec![Ok(6)]);
    eventually("node 4 applies it", async || high_watermark(&joined.node).await == 9).await;
    let refused = leader_node.remove_node(leaving).await;
    assert!(refused.is_err(), "removing a non-member is refused");
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
        let config = NodeConfig { peers: access(), ..NodeConfig::new(i as u64 + 1, dir.path().to_owned()) };
        let node = ControllerNode::start_cluster(config, peers.clone()).await.expect("start");
        let app = controller_router(node.clone(), access());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cluster_secret_nothing_changes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let peers = BTreeMap::from([(1, addr.clone())]);
    let member = start(1, &peers, listener).await;
    eventually("it leads", async || member.node.raft().metrics().borrow().current_leader == Some(1)).await;
    let term = member.node.raft().metrics().borrow().current_term;
    let anyone = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    // a vote with a far higher term, a topic, a membership change: all 401
    let vote = shale_controller::network::codec::encode(&openraft::raft::VoteRequest::new(
        openraft::Vote::new(term + 100, 9),
        None,
    ))
    .expect("encode");
    let attempts = [
        anyone.post(url("/raft/vote")).body(vote.clone()),
        anyone
            .post(url("/api/topics"))
            .json(&serde_json::json!({"name": "x", "partitions": 1, "created_ms": 0})),
        anyone.post(url("/api/members")).json(&serde_json::json!({"remove": {"id": 1}})),
        anyone.get(url("/api/topics")),
        anyone
            .post(url("/api/gateways/heartbeat"))
            .header("authorization", "Bearer wrong-secret-0123456789")
            .json(&serde_json::json!({"url": "http://evil", "lease_ms": 10000})),
    ];
    for attempt in attempts {
        let response = attempt.send().await.expect("send");
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(member.node.raft().metrics().borrow().current_term, term, "the term did not move");
    assert!(member.node.list_topics().await.expect("list").is_empty());
    assert!(member.node.gateways().is_empty());
    assert_eq!(member.node.voters(), [1].into_iter().collect());

    // with the secret, but naming another node than the vote speaks for: 403
    let refused = authorized()
        .post(url("/raft/vote"))
        .header("shale-node-id", "1")
        .body(vote.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 403);
    let unnamed = authorized().post(url("/raft/vote")).body(vote).send().await;
    assert_eq!(unnamed.expect("send").status(), 403, "a sender that names no node");
    assert_eq!(member.node.raft().metrics().borrow().current_term, term, "the term did not move");

    // metrics stay open for scrapers; the API works with the secret
    assert_eq!(anyone.get(url("/metrics")).send().await.expect("send").status(), 200);
    assert_eq!(authorized().get(url("/api/topics")).send().await.expect("send").status(), 200);
}

/// Answers 503 to the Raft appends a node would receive while `blocked` is
/// set, so it lags while still serving reads.
async fn block_appends(
    axum::extract::State(blocked): axum::extract::State<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.uri().path() == "/raft/append" && blocked.load(std::sync::atomic::Ordering::Relaxed) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "blocked by the test").into_response();
    }
    next.run(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_through_a_lagging_follower_still_finds_acknowledged_offsets() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use shale_controller_client::RemoteController;
    use shale_controller_client::remote::ClientOptions;

    let listeners = listeners(3).await;
    let peers: BTreeMap<u64, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
        .collect();
    let blocked: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut members: Vec<Option<Member>> = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = NodeConfig { peers: access(), ..NodeConfig::new(i as u64 + 1, dir.path().to_owned()) };
        let node = ControllerNode::start_cluster(config, peers.clone()).await.expect("start");
        let app = controller_router(node.clone(), access())
            .layer(axum::middleware::from_fn_with_state(blocked[i].clone(), block_appends));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        members.push(Some(Member { node, server, _dir: dir }));
    }
    eventually("a leader all agree on", async || leader(&members).is_some()).await;
    let leader_node = members[leader(&members).expect("leader")].as_ref().expect("live").node.clone();
    let lagging = members.iter().flatten().find(|m| m.node.id() != leader_node.id()).expect("a follower");
    let info = leader_node.create_topic(topic(), 1, TopicConfig::default(), 0).await.expect("create");
    leader_node.commit_segment(segment(info.id, 0)).await.expect("commit");
    eventually("the follower has the first commit", async || high_watermark(&lagging.node).await == 3).await;

    // the follower stops receiving appends; two more commits are acknowledged
    blocked[(lagging.node.id() - 1) as usize].store(true, Ordering::Relaxed);
    for n in 1..3 {
        leader_node.commit_segment(segment(info.id, n)).await.expect("commit");
    }
    assert_eq!(high_watermark(&lagging.node).await, 3, "the follower lags");

    // a client that reads from the lagging follower first still finds offset 6
    let mut order = vec![peers[&lagging.node.id()].clone()];
    order.extend(peers.iter().filter(|(id, _)| **id != lagging.node.id()).map(|(_, a)| a.clone()));
    let options = ClientOptions { secret: access().secret, ca_cert_pem: None };
    let client = RemoteController::new(order, &options).expect("client");
    let read = client.read_partition(&topic(), 0, 6, 10, Duration::ZERO).await.expect("read");
    assert!(read.high_watermark >= 9, "an acknowledged offset is never out of range: {read:?}");
    assert_eq!(read.chunks.first().map(|c| c.base_offset), Some(6));
    // an offset below the follower's high watermark is served by the follower as before
    let early = client.read_partition(&topic(), 0, 0, 10, Duration::ZERO).await.expect("read");
    assert_eq!(early.high_watermark, 3, "served by the lagging follower");
    blocked[(lagging.node.id() - 1) as usize].store(false, Ordering::Relaxed);
}
