//! The controller's HTTP API, served by every node next to its Raft RPCs.
//! One route per operation ([`shale_controller_client::api`] names them);
//! writes are taken by the leader (a follower answers `NotLeader` with the
//! leader's address, and the client follows it); reads are served by any
//! node, since the index only grows. Every route but `/metrics` requires the
//! cluster credential when one is configured.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use shale_controller_client::api::{
    self, CreateTopicRequest, HeartbeatRequest, LeaveRequest, MemberChange, ReadQuery, TimeQuery,
    UpdateTopicRequest,
};
use shale_controller_client::auth::{TokenInfo, TokenRecord};
use shale_controller_client::classic::{ClassicAnswer, ClassicRequest};
use shale_controller_client::group::{
    CommitOffsets, GroupInfo, MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition,
};
use shale_controller_client::watch::{WatchAnswer, WatchQuery};
use shale_controller_client::{
    ClusterSecret, CommitSegment, Controller, ControllerError, PartitionRead, ReplaceRange, SegmentOutcomes,
};
use shale_core::{Offset, PartitionId, TopicName};

use crate::model::{CompactorLease, GatewayLease, MetaError, TopicInfo};
use crate::network::{PeerAccess, raft_router};
use crate::node::ControllerNode;
use crate::status::Status;

/// Longest a read may long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Largest controller API body: a segment commit with one chunk for each of
/// many thousands of partitions.
const MAX_API_BODY: usize = 64 << 20;

pub type ApiResult<T> = Json<Result<T, ControllerError>>;

#[derive(Clone)]
struct ApiState {
    node: ControllerNode,
    peers: PeerAccess,
}

/// Raft RPCs and the controller API of one node; `peers` holds the cluster
/// credential that every route but `/metrics` requires.
pub fn controller_router(node: ControllerNode, peers: PeerAccess) -> Router {
    let state = ApiState { node: node.clone(), peers: peers.clone() };
    let api = Router::new()
        .route(api::TOPICS, get(list).post(create_topic))
        .route("/api/topics/{topic}", get(describe).delete(delete_topic).patch(update_topic))
        .route(api::SEGMENTS, post(commit_segment))
        .route(api::SEGMENT_GROUPS, post(commit_segments))
        .route(api::HEARTBEAT, post(heartbeat))
        .route(api::LEAVE, post(leave))
        .route(api::READ, get(read))
        .route(api::STATUS, get(status))
        .route(api::MEMBERS, post(members))
        .route(api::GATEWAYS, get(gateways))
        .route(api::COMPACTOR_HEARTBEAT, post(compactor_heartbeat))
        .route(api::COMPACTOR_LEAVE, post(compactor_leave))
        .route(api::RANGES, post(replace_range))
        .route(api::OBJECTS, get(referenced_objects))
        .route(api::TOKENS, get(list_tokens).post(create_token))
        .route("/api/tokens/{name}", axum::routing::delete(revoke_token))
        .route(api::TIME, get(find_time))
        .route(api::WATCH, get(watch))
        .route(api::GROUPS, get(list_groups))
        .route("/api/groups/{group}", get(describe_group).delete(delete_group))
        .route("/api/groups/{group}/members/{member}", post(group_heartbeat).delete(leave_group))
        .route("/api/groups/{group}/offsets", post(commit_offsets))
        .route("/api/groups/{group}/classic", post(classic_group))
        .route("/api/groups/{group}/reset", post(reset_offsets))
        .route("/api/groups/{group}/offsets/delete", post(delete_offsets))
        .route("/api/topics/{topic}/partitions/{partition}/delete-records", post(delete_records))
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .with_state(state);
    let protected = raft_router(node.clone()).merge(api);
    let protected = match peers.secret.clone() {
        Some(secret) => protected.layer(middleware::from_fn_with_state(secret, require_secret)),
        None => protected,
    };
    protected.merge(Router::new().route("/metrics", get(metrics)).with_state(node))
}

/// Refuses, with 401 and before anything runs, a request without the secret.
async fn require_secret(State(secret): State<ClusterSecret>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !secret.accepts(presented) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the cluster credential is missing or wrong",
        )
            .into_response();
    }
    next.run(request).await
}

async fn create_topic(State(s): State<ApiState>, Json(r): Json<CreateTopicRequest>) -> ApiResult<TopicInfo> {
    Json(s.node.create_topic(r.name, r.partitions, r.config, r.created_ms).await)
}

async fn delete_topic(State(s): State<ApiState>, Path(topic): Path<String>) -> ApiResult<()> {
    let Ok(name) = TopicName::new(topic.clone()) else {
        return Json(Err(MetaError::TopicNotFound(topic).into()));
    };
    Json(s.node.delete_topic(name).await)
}

async fn update_topic(
    State(s): State<ApiState>,
    Path(topic): Path<String>,
    Json(r): Json<UpdateTopicRequest>,
) -> ApiResult<TopicInfo> {
    let Ok(name) = TopicName::new(topic.clone()) else {
        return Json(Err(MetaError::TopicNotFound(topic).into()));
    };
    Json(s.node.update_topic(name, r.config, r.partitions).await)
}

async fn commit_segment(
    State(s): State<ApiState>,
    Json(commit): Json<CommitSegment>,
) -> ApiResult<Vec<Result<Offset, MetaError>>> {
    Json(s.node.commit_segment(commit).await)
}

async fn commit_segments(
    State(s): State<ApiState>,
    Json(commits): Json<Vec<CommitSegment>>,
) -> ApiResult<Vec<SegmentOutcomes>> {
    Json(s.node.commit_segments(commits).await)
}

async fn heartbeat(State(s): State<ApiState>, Json(r): Json<HeartbeatRequest>) -> ApiResult<GatewayLease> {
    Json(s.node.heartbeat(&r.url, r.lease_ms).await)
}

async fn leave(State(s): State<ApiState>, Json(r): Json<LeaveRequest>) -> ApiResult<()> {
    Json(s.node.leave(&r.url).await)
}

async fn compactor_heartbeat(
    State(s): State<ApiState>,
    Json(r): Json<HeartbeatRequest>,
) -> ApiResult<CompactorLease> {
    Json(s.node.compactor_heartbeat(&r.url, r.lease_ms).await)
}

async fn compactor_leave(State(s): State<ApiState>, Json(r): Json<LeaveRequest>) -> ApiResult<()> {
    Json(s.node.compactor_leave(&r.url).await)
}

async fn replace_range(State(s): State<ApiState>, Json(r): Json<ReplaceRange>) -> ApiResult<()> {
    Json(s.node.replace_range(r).await)
}

async fn referenced_objects(State(s): State<ApiState>) -> ApiResult<Vec<String>> {
    Json(s.node.referenced_objects().await)
}

async fn list(State(s): State<ApiState>) -> ApiResult<Vec<TopicInfo>> {
    Json(s.node.list_topics().await)
}

async fn describe(State(s): State<ApiState>, Path(topic): Path<String>) -> ApiResult<TopicInfo> {
    let Ok(name) = TopicName::new(topic.clone()) else {
        return Json(Err(MetaError::TopicNotFound(topic).into()));
    };
    Json(s.node.describe_topic(&name).await)
}

async fn read(State(s): State<ApiState>, Query(q): Query<ReadQuery>) -> ApiResult<PartitionRead> {
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    if q.linearizable
        && let Err(e) = s.node.read_barrier().await
    {
        return Json(Err(e));
    }
    Json(s.node.read_partition(&q.topic, q.partition, q.from, q.max_chunks, wait).await)
}

async fn status(State(s): State<ApiState>) -> Json<Status> {
    Json(s.node.status())
}

async fn metrics(State(node): State<ControllerNode>) -> Response {
    let body = crate::metrics::render(&node.status(), node.timings(), node.index_entries());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn members(State(s): State<ApiState>, Json(change): Json<MemberChange>) -> ApiResult<()> {
    Json(match change {
        MemberChange::Add { id, addr } => match s.peers.identify(&addr).await {
            Ok(found) if found == id => s.node.add_node(id, addr).await,
            Ok(found) => {
                Err(MetaError::Invalid(format!("the node at {addr} is node {found}, not {id}")).into())
            }
            Err(e) => Err(ControllerError::Unavailable(format!("cannot reach the node at {addr}: {e}"))),
        },
        MemberChange::Remove { id } => s.node.remove_node(id).await,
    })
}

async fn list_tokens(State(s): State<ApiState>) -> ApiResult<Vec<TokenRecord>> {
    Json(s.node.list_tokens().await)
}

async fn create_token(State(s): State<ApiState>, Json(token): Json<TokenRecord>) -> ApiResult<TokenInfo> {
    Json(s.node.create_token(token).await)
}

async fn revoke_token(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<()> {
    Json(s.node.revoke_token(&name).await)
}

async fn watch(State(s): State<ApiState>, Query(q): Query<WatchQuery>) -> ApiResult<WatchAnswer> {
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    Json(s.node.watch(q.since, wait).await)
}

async fn find_time(State(s): State<ApiState>, Query(q): Query<TimeQuery>) -> ApiResult<PartitionRead> {
    Json(s.node.find_time(&q.topic, q.partition, q.timestamp_ms).await)
}

async fn group_heartbeat(
    State(s): State<ApiState>,
    Path((group, member)): Path<(String, String)>,
    Json(heartbeat): Json<MemberHeartbeat>,
) -> ApiResult<MemberAssignment> {
    Json(s.node.group_heartbeat(&group, &member, heartbeat).await)
}

async fn leave_group(
    State(s): State<ApiState>,
    Path((group, member)): Path<(String, String)>,
) -> ApiResult<()> {
    Json(s.node.leave_group(&group, &member).await)
}

async fn classic_group(
    State(s): State<ApiState>,
    Path(group): Path<String>,
    Json(request): Json<ClassicRequest>,
) -> ApiResult<ClassicAnswer> {
    Json(s.node.classic_group(&group, request).await)
}

async fn commit_offsets(
    State(s): State<ApiState>,
    Path(group): Path<String>,
    Json(commit): Json<CommitOffsets>,
) -> ApiResult<()> {
    Json(s.node.commit_offsets(&group, commit).await)
}

async fn reset_offsets(
    State(s): State<ApiState>,
    Path(group): Path<String>,
    Json(offsets): Json<Vec<OffsetCommit>>,
) -> ApiResult<()> {
    Json(s.node.reset_offsets(&group, offsets).await)
}

async fn delete_group(State(s): State<ApiState>, Path(group): Path<String>) -> ApiResult<()> {
    Json(s.node.delete_group(&group).await)
}

async fn delete_offsets(
    State(s): State<ApiState>,
    Path(group): Path<String>,
    Json(partitions): Json<Vec<TopicPartition>>,
) -> ApiResult<()> {
    Json(s.node.delete_offsets(&group, partitions).await)
}

async fn delete_records(
    State(s): State<ApiState>,
    Path((topic, partition)): Path<(String, PartitionId)>,
    Json(before): Json<Offset>,
) -> ApiResult<TopicInfo> {
    let Ok(name) = TopicName::new(topic.clone()) else {
        return Json(Err(MetaError::TopicNotFound(topic).into()));
    };
    Json(s.node.delete_records(&name, partition, before).await)
}

async fn list_groups(State(s): State<ApiState>) -> ApiResult<Vec<GroupInfo>> {
    Json(s.node.list_groups().await)
}

async fn describe_group(State(s): State<ApiState>, Path(group): Path<String>) -> ApiResult<GroupInfo> {
    Json(s.node.describe_group(&group).await)
}

/// The live gateways and their leases (expiry in the leader's clock, ms).
async fn gateways(State(s): State<ApiState>) -> Json<Vec<GatewayLease>> {
    Json(s.node.gateways())
}
