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
use axum::http::{HeaderMap, StatusCode, header};
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
use crate::status::Status;
use crate::types::{NodeId, TypeConfig};
use shale_controller_client::ClusterSecret;
use shale_controller_client::api::NODE_ID_HEADER;

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

/// Refuses an RPC whose sender does not name itself as the node the RPC
/// speaks for. Every node holds the cluster secret, so this catches a
/// confused or misconfigured sender, not a malicious member (that needs
/// per-node certificates). Membership is deliberately not checked here: a
/// lagging node may not know a newer member yet and must still accept its
/// appends and answer its votes.
fn refuse_sender(headers: &HeaderMap, claimed: Option<NodeId>) -> Option<Response> {
    let named =
        headers.get(NODE_ID_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<NodeId>().ok());
    if named.is_some() && named == claimed {
        return None;
    }
    let message = format!("the sender names itself {named:?} but speaks for node {claimed:?}");
    Some((StatusCode::FORBIDDEN, message).into_response())
}

async fn append(State(node): State<ControllerNode>, headers: HeaderMap, body: Bytes) -> Response {
    let rpc: AppendEntriesRequest<TypeConfig> = match codec::decode(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_request(e),
    };
    if let Some(refused) = refuse_sender(&headers, rpc.vote.leader_id().voted_for()) {
        return refused;
    }
    // a restored node catches up at least to what this append commits or carries
    let carried = rpc.entries.last().map(|e| e.log_id.index);
    node.recovery().heard_leader(rpc.leader_commit.map(|c| c.index).max(carried));
    reply(&node.raft().append_entries(rpc).await)
}

async fn vote(State(node): State<ControllerNode>, headers: HeaderMap, body: Bytes) -> Response {
    if !node.recovery().may_vote() {
        return (StatusCode::SERVICE_UNAVAILABLE, "restored from the bucket: not voting until caught up")
            .into_response();
    }
    let rpc: VoteRequest<NodeId> = match codec::decode(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_request(e),
    };
    if let Some(refused) = refuse_sender(&headers, rpc.vote.leader_id().voted_for()) {
        return refused;
    }
    reply(&node.raft().vote(rpc).await)
}

async fn snapshot(State(node): State<ControllerNode>, headers: HeaderMap, body: Bytes) -> Response {
    let rpc = match codec::decode_snapshot_chunk(&body) {
        Ok(rpc) => rpc,
        Err(e) => return bad_request(e),
    };
    if let Some(refused) = refuse_sender(&headers, rpc.vote.leader_id().voted_for()) {
        return refused;
    }
    reply(&node.raft().install_snapshot(rpc).await)
}

/// How this node reaches its peers, and what it asks of them: the cluster
/// credential (presented and required) and TLS.
#[derive(Debug, Clone, Default)]
pub struct PeerAccess {
    pub secret: Option<ClusterSecret>,
    /// Peers serve HTTPS; verify them against `ca_cert_pem` (PEM) too.
    pub tls: bool,
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl PeerAccess {
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// An HTTP client that presents the credential on every request.
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        shale_controller_client::remote::http_client(self.secret.as_ref(), self.ca_cert_pem.as_deref())
    }

    /// Asks the node at `addr` (`host:port`) which id it has.
    pub async fn identify(&self, addr: &str) -> Result<NodeId, String> {
        let http = self.client().map_err(|e| e.to_string())?;
        let url = format!("{}://{addr}{}", self.scheme(), shale_controller_client::api::STATUS);
        let response =
            http.get(url).timeout(Duration::from_secs(2)).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("it answered {}", response.status()));
        }
        let status: Status = response.json().await.map_err(|e| e.to_string())?;
        Ok(status.id)
    }
}

/// Network factory for a controller cluster: one HTTP client for all peers.
#[derive(Debug, Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
    scheme: &'static str,
    /// This node, named on every RPC it sends.
    id: NodeId,
}

impl HttpNetwork {
    pub fn new(id: NodeId, access: &PeerAccess) -> Result<Self, reqwest::Error> {
        Ok(Self { http: access.client()?, scheme: access.scheme(), id })
    }
}

/// A connection to one peer.
pub struct HttpPeer {
    http: reqwest::Client,
    scheme: &'static str,
    from: NodeId,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HttpPeer {
            http: self.http.clone(),
            scheme: self.scheme,
            from: self.id,
            target,
            addr: node.addr.clone(),
        }
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
        let url = format!("{}://{}/raft/{path}", self.scheme, self.addr);
        let response = self
            .http
            .post(url)
            .timeout(option.hard_ttl())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .header(NODE_ID_HEADER, self.from)
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
