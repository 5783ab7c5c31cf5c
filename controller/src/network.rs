//! The Raft network: RPCs as JSON over HTTP (`POST /raft/{append,vote,snapshot}`
//! on each controller, served by [`raft_router`]). A single-node controller
//! uses [`SingleNodeNetwork`], which has no peers to reach.
//!
//! A node restored from the bucket answers vote requests with 503 until it has
//! caught up (see [`crate::recovery`]): to candidates it is as if it were down.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::node::ControllerNode;
use crate::types::{NodeId, TypeConfig};

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

/// Serves this node's side of the Raft RPCs.
pub fn raft_router(node: ControllerNode) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .with_state(node)
}

async fn append(
    State(node): State<ControllerNode>,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    // a restored node catches up at least to what this append commits or carries
    let carried = rpc.entries.last().map(|e| e.log_id.index);
    node.recovery().heard_leader(rpc.leader_commit.map(|c| c.index).max(carried));
    Json(node.raft().append_entries(rpc).await)
}

async fn vote(State(node): State<ControllerNode>, Json(rpc): Json<VoteRequest<NodeId>>) -> Response {
    if !node.recovery().may_vote() {
        return (StatusCode::SERVICE_UNAVAILABLE, "restored from the bucket: not voting until caught up")
            .into_response();
    }
    let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> = node.raft().vote(rpc).await;
    Json(answer).into_response()
}

async fn snapshot(
    State(node): State<ControllerNode>,
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(node.raft().install_snapshot(rpc).await)
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
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        rpc: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, RaftError<NodeId, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("http://{}/raft/{path}", self.addr);
        let response = self
            .http
            .post(url)
            .timeout(option.hard_ttl())
            .json(rpc)
            .send()
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            response.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call("vote", &rpc, &option).await
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
