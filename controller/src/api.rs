//! The controller's HTTP API, served by every node next to its Raft RPCs:
//! writes are taken by the leader (a follower answers `NotLeader` with the
//! leader's address, and [`crate::remote::RemoteController`] follows it);
//! reads are served by any node, since the index only grows.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shale_core::{Offset, PartitionId, TopicName};

use crate::client::{Controller, ControllerError, PartitionRead};
use crate::model::{GatewayLease, MetaError, TopicInfo};
use crate::network::raft_router;
use crate::node::ControllerNode;
pub use crate::status::{MemberStatus, Status};
use crate::types::{Command, CommandReply};

/// Longest a read may long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub type ApiResult<T> = Json<Result<T, ControllerError>>;

/// Raft RPCs and the controller API of one node.
pub fn controller_router(node: ControllerNode) -> Router {
    let api = Router::new()
        .route("/api/write", post(write))
        .route("/api/topics", get(list))
        .route("/api/topics/{topic}", get(describe))
        .route("/api/read", get(read))
        .route("/api/status", get(status))
        .route("/api/members", post(members))
        .route("/api/gateways", get(gateways))
        .route("/metrics", get(metrics))
        .with_state(node.clone());
    raft_router(node).merge(api)
}

async fn write(State(node): State<ControllerNode>, Json(command): Json<Command>) -> ApiResult<CommandReply> {
    Json(node.write(command).await)
}

async fn list(State(node): State<ControllerNode>) -> ApiResult<Vec<TopicInfo>> {
    Json(node.list_topics().await)
}

async fn describe(State(node): State<ControllerNode>, Path(topic): Path<String>) -> ApiResult<TopicInfo> {
    let Ok(name) = TopicName::new(topic.clone()) else {
        return Json(Err(MetaError::TopicNotFound(topic).into()));
    };
    Json(node.describe_topic(&name).await)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReadQuery {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub from: Offset,
    pub max_chunks: usize,
    pub wait_ms: u64,
}

async fn read(State(node): State<ControllerNode>, Query(q): Query<ReadQuery>) -> ApiResult<PartitionRead> {
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    Json(node.read_partition(&q.topic, q.partition, q.from, q.max_chunks, wait).await)
}

async fn status(State(node): State<ControllerNode>) -> Json<Status> {
    Json(node.status())
}

async fn metrics(State(node): State<ControllerNode>) -> Response {
    let body = crate::metrics::render(&node.status());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// A membership change, sent to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Add a node (`addr` is its `host:port`): it catches up as a learner, then votes.
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
}

async fn members(State(node): State<ControllerNode>, Json(change): Json<MemberChange>) -> ApiResult<()> {
    Json(match change {
        MemberChange::Add { id, addr } => node.add_node(id, addr).await,
        MemberChange::Remove { id } => node.remove_node(id).await,
    })
}

/// The live gateways and their leases (expiry in the leader's clock, ms).
async fn gateways(State(node): State<ControllerNode>) -> Json<Vec<GatewayLease>> {
    Json(node.gateways())
}
