//! The Raft network: RPCs over HTTP (`POST /raft/{append,vote,snapshot}` on
//! each controller, served by [`raft_router`]), in the binary encoding of
//! [`codec`], each route with a body limit that matches what a sender may
//! send. A single-node controller uses [`SingleNodeNetwork`], which has no
//! peers to reach.
//!
//! A node restored from the bucket answers vote requests with 503 until it has
//! caught up (see [`crate::recovery`]): to candidates it is as if it were down.

pub mod codec;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::codec::{
    APPEND_TARGET_BYTES, CONTENT_TYPE, MAX_APPEND_BYTES, MAX_SNAPSHOT_CHUNK_BODY, MAX_VOTE_BYTES,
};
use crate::node::ControllerNode;
use crate::types::{NodeId, TypeConfig};

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

/// Serves this node's side of the Raft RPCs.
pub fn raft_router(node: ControllerNode) -> Router {
    Router::new()
        .route("/raft/append", post(append).layer(DefaultBodyLimit::max(MAX_APPEND_BYTES)))
        .route("/raft/vote", post(vote).layer(DefaultBodyLimit::max(MAX_VOTE_BYTES)))
        .route("/raft/snapshot", post(snapshot).layer(DefaultBodyLimit::max(MAX_SNAPSHOT_CHUNK_BODY)))
        .with_state(node)
}

/// An RPC reply in the wire encoding.
fn reply<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn bad_request(e: codec::CodecError) -> Response {
    (StatusCode::BAD_REQUEST, format!("raft rpc: {e}")).into_response()
}

async fn append(State(node): State<ControllerNode>, body: Bytes) -> Response {
    let rpc: AppendEntriesRequest<TypeConfig> = match codec::decode(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_request(e),
    };
    // a restored node catches up at least to what this append commits or carries
    let carried = rpc.entries.last().map(|e| e.log_id.index);
    node.recovery().heard_leader(rpc.leader_commit.map(|c| c.index).max(carried));
    reply(&node.raft().append_entries(rpc).await)
}

async fn vote(State(node): State<ControllerNode>, body: Bytes) -> Response {
    if !node.recovery().may_vote() {
        return (StatusCode::SERVICE_UNAVAILABLE, "restored from the bucket: not voting until caught up")
            .into_response();
    }
    let rpc: VoteRequest<NodeId> = match codec::decode(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_request(e),
    };
    reply(&node.raft().vote(rpc).await)
}

async fn snapshot(State(node): State<ControllerNode>, body: Bytes) -> Response {
    let rpc = match codec::decode_snapshot_chunk(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_request(e),
    };
    reply(&node.raft().install_snapshot(rpc).await)
}

/// Network factory for a controller cluster: one HTTP client for all peers.
#[derive(Debug, Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
}

impl HttpNetwork {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http }
    }
}

impl Default for HttpNetwork {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection to one peer.
pub struct HttpPeer {
    http: reqwest::Client,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HttpPeer { http: self.http.clone(), target, addr: node.addr.clone() }
    }
}

impl HttpPeer {
    /// Sends an encoded request and decodes the peer's answer.
    async fn call<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}/raft/{path}", self.addr);
        let response = self
            .http
            .post(url)
            .timeout(option.hard_ttl())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Err(RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
                "{status}: {text}"
            )))));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn encoding_failed<E: std::error::Error>(e: codec::CodecError) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let body = codec::encode(&rpc).map_err(encoding_failed)?;
        let entries = rpc.entries.len();
        if body.len() > APPEND_TARGET_BYTES && entries > 1 {
            // openraft resends fewer entries; one entry always fits the limit
            let hint = (entries * APPEND_TARGET_BYTES / body.len()).max(1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint as u64)));
        }
        self.call("append", body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let body = codec::encode_snapshot_chunk(&rpc).map_err(encoding_failed)?;
        self.call("snapshot", body, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let body = codec::encode(&rpc).map_err(encoding_failed)?;
        self.call("vote", body, &option).await
    }
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable: this controller runs as a single node")]
struct NoPeers(NodeId);

/// Network factory for a single-node controller.
#[derive(Debug, Clone, Default)]
pub struct SingleNodeNetwork;

pub struct NoConnection(NodeId);

impl RaftNetworkFactory<TypeConfig> for SingleNodeNetwork {
    type Network = NoConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        NoConnection(target)
    }
}

impl RaftNetwork<TypeConfig> for NoConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeers(self.0))))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeers(self.0))))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        Err(RPCError::Unreachable(Unreachable::new(&NoPeers(self.0))))
    }
}
