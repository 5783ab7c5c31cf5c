//! Consumer groups: join and heartbeat, leave, commit and read offsets, and
//! the admin routes. Group state lives in the controller, so any gateway
//! serves any member.
//!
//! Grants: joining, leaving and committing need `consume` on each topic involved;
//! seeing a group needs `describe` on every topic it touches (others do not
//! see it listed); resetting offsets and deleting a group need admin on `*`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::group::{
    self, CommittedOffset, DEFAULT_SESSION_TIMEOUT_MS, GroupInfo, MemberAssignment, MemberHeartbeat,
    MemberInfo, OffsetCommit, TopicPartition,
};
use shale_core::{ErrorCode, Offset, TopicName};

use super::extract::{ApiPath, Body, json_body};
use super::openapi::ErrorBody;
use super::{ApiError, AppState, require};
use crate::service::groups::{self, GroupId, MemberId};
use crate::service::offsets::{At, resolve};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// The topics to consume; the group assigns their partitions.
    topics: Vec<String>,
    /// A member not heard from for this long loses its partitions
    /// (1 000 to 300 000; default 30 000).
    session_timeout_ms: Option<u64>,
    /// Static membership: a member rejoining under a new id with the same
    /// instance id takes over the old one's partitions, with no rebalance,
    /// and leaving keeps them for the session timeout.
    instance_id: Option<String>,
    /// The epoch of the last answer acted on. A revocation completes when a
    /// member presents the epoch that announced it; without this field a
    /// heartbeat acknowledges every earlier answer.
    member_epoch: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// With `member_epoch`: a member's commit. Without: a manual commit,
    /// allowed only for a group with no live members.
    member_id: Option<String>,
    member_epoch: Option<u64>,
    offsets: Vec<OffsetCommit>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// `earliest` or `latest`.
    to: Option<String>,
    /// The first offset at or after this time, per partition.
    timestamp_ms: Option<i64>,
    /// Explicit offsets.
    offsets: Option<Vec<OffsetCommit>>,
    /// The topics to reset (for `to` and `timestamp_ms`); default: every
    /// topic the group has offsets for.
    topics: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupOffsets {
    group: String,
    offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupSummary {
    group: String,
    /// `empty`, `reconciling` or `stable`.
    state: &'static str,
    members: usize,
    group_epoch: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupList {
    groups: Vec<GroupSummary>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartitionLag {
    #[schema(value_type = String)]
    topic: TopicName,
    partition: u32,
    /// The member owning it, if any.
    owner: Option<String>,
    #[schema(value_type = Option<u64>)]
    committed_offset: Option<Offset>,
    #[schema(value_type = u64)]
    log_start_offset: Offset,
    #[schema(value_type = u64)]
    high_watermark: Offset,
    /// Records between the committed offset (or, with none, the log start)
    /// and the high watermark.
    lag: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupDescription {
    group: String,
    state: &'static str,
    group_epoch: u64,
    members: Vec<MemberInfo>,
    partitions: Vec<PartitionLag>,
    total_lag: u64,
}

/// Group calls are idempotent (a join, a commit of the same offsets, a
/// leave), so one whose outcome is unknown may be repeated as it is.
pub fn repeatable(e: impl Into<ApiError>) -> ApiError {
    let mut e = e.into();
    if e.code == ErrorCode::OutcomeUnknown {
        e.retryable = Some(true);
    }
    e
}

fn valid_id(what: &str, id: &str) -> Result<(), ApiError> {
    group::validate_id(what, id).map_err(ApiError::invalid)
}

/// Every topic a group touches: subscribed by a member, or with an offset.
fn topics_of(g: &GroupInfo) -> BTreeSet<TopicName> {
    g.members
        .iter()
        .flat_map(|m| m.topics.iter().cloned())
        .chain(g.offsets.iter().map(|o| o.topic.clone()))
        .collect()
}

fn visible(principal: &Principal, g: &GroupInfo) -> bool {
    topics_of(g).iter().all(|t| principal.allows(Operation::Describe, t.as_str()))
}

fn require_visible(principal: &Principal, g: &GroupInfo) -> Result<(), ApiError> {
    match topics_of(g).iter().find(|t| !principal.allows(Operation::Describe, t.as_str())) {
        Some(t) => require(principal, Operation::Describe, t.as_str()),
        None => Ok(()),
    }
}

fn require_cluster_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.is_cluster_admin() {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("{} may not administer groups (needs admin on *)", principal.name),
    ))
}

#[utoipa::path(
    put,
    path = "/v1/groups/{group}/members/{member_id}",
    tag = "groups",
    summary = "Join a group, or heartbeat in it (idempotent); answers the member's assignment",
    request_body = JoinBody,
    params(("group" = String, Path), ("member_id" = String, Path)),
    responses(
        (status = 200, body = MemberAssignment),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
)]
pub async fn join(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((group, member)): ApiPath<(String, String)>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<MemberAssignment>, ApiError> {
    let group = GroupId::parse(group)?;
    let member = MemberId::parse(member)?;
    let req: JoinBody = json_body(&headers, &body)?;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let t = TopicName::new(t)?;
        require(&principal, Operation::Consume, t.as_str())?;
        topics.push(t);
    }
    if let Some(instance) = &req.instance_id {
        valid_id("an instance id", instance)?;
    }
    let heartbeat = MemberHeartbeat {
        topics: Some(topics),
        session_timeout_ms: req.session_timeout_ms.unwrap_or(DEFAULT_SESSION_TIMEOUT_MS),
        instance_id: req.instance_id,
        member_epoch: req.member_epoch,
    };
    Ok(Json(groups::heartbeat(&state, &principal, &group, &member, heartbeat).await.map_err(repeatable)?))
}

#[utoipa::path(
    delete,
    path = "/v1/groups/{group}/members/{member_id}",
    tag = "groups",
    summary = "Leave a group: the member's partitions move at once (a static member's after its session)",
    params(("group" = String, Path), ("member_id" = String, Path)),
    responses(
        (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn leave(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath((group, member)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let group = GroupId::parse(group)?;
    let member = MemberId::parse(member)?;
    // only a principal that may consume what the member reads may end it
    let g = groups::describe(&state, &group).await?;
    if let Some(m) = g.members.iter().find(|m| m.member_id == member.as_str()) {
        for topic in &m.topics {
            require(&principal, Operation::Consume, topic.as_str())?;
        }
    }
    groups::leave(&state, &group, &member).await.map_err(repeatable)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/groups/{group}/offsets",
    tag = "groups",
    summary = "Commit offsets (the next record to read), as a member at its epoch or manually",
    request_body = CommitBody,
    params(("group" = String, Path)),
    responses(
        (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
)]
pub async fn commit(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(group): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let group = GroupId::parse(group)?;
    let req: CommitBody = json_body(&headers, &body)?;
    let member = match (req.member_id, req.member_epoch) {
        (Some(id), Some(epoch)) => Some((MemberId::parse(id)?, epoch)),
        (None, None) => None,
        _ => return Err(ApiError::invalid("member_id and member_epoch go together")),
    };
    let member = member.as_ref().map(|(m, epoch)| (m, *epoch));
    groups::commit(&state, &principal, &group, member, req.offsets).await.map_err(repeatable)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/groups/{group}/offsets",
    tag = "groups",
    summary = "The group's committed offsets",
    params(("group" = String, Path)),
    responses(
        (status = 200, body = GroupOffsets), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn offsets(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(group): ApiPath<String>,
) -> Result<Json<GroupOffsets>, ApiError> {
    let group = GroupId::parse(group)?;
    let g = groups::describe(&state, &group).await?;
    require_visible(&principal, &g)?;
    Ok(Json(GroupOffsets { group: g.group, offsets: g.offsets }))
}

#[utoipa::path(
    get,
    path = "/v1/groups",
    tag = "groups",
    summary = "List groups",
    responses((status = 200, body = GroupList), (status = 401, body = ErrorBody)),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Json<GroupList>, ApiError> {
    let groups = groups::list(&state).await?;
    let mut out = Vec::new();
    for g in groups.iter().filter(|g| visible(&principal, g)) {
        let subscribed = subscribed_partitions(&state, g).await?.len();
        out.push(GroupSummary {
            group: g.group.clone(),
            state: g.state(subscribed),
            members: g.members.len(),
            group_epoch: g.group_epoch,
        });
    }
    Ok(Json(GroupList { groups: out }))
}

/// Every partition of every topic the group's members subscribe to, with
/// each topic's partitions' bounds.
async fn subscribed_partitions(
    state: &AppState,
    g: &GroupInfo,
) -> Result<BTreeMap<TopicPartition, (Offset, Offset)>, ApiError> {
    let mut out = BTreeMap::new();
    for topic in topics_of(g) {
        let info = match state.controller.describe_topic(&topic).await {
            Ok(info) => info,
            Err(shale_controller_client::ControllerError::Meta(
                shale_controller_client::MetaError::TopicNotFound(_),
            )) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let subscribed = g.members.iter().any(|m| m.topics.contains(&topic));
        for p in info.partitions {
            let tp = TopicPartition { topic: topic.clone(), partition: p.partition };
            if subscribed || g.offsets.iter().any(|o| o.topic == tp.topic && o.partition == tp.partition) {
                out.insert(tp, (p.log_start_offset, p.high_watermark));
            }
        }
    }
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/v1/groups/{group}",
    tag = "groups",
    summary = "A group's members, assignment, committed offsets, high watermarks and lag",
    params(("group" = String, Path)),
    responses(
        (status = 200, body = GroupDescription), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn describe(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(group): ApiPath<String>,
) -> Result<Json<GroupDescription>, ApiError> {
    let group = GroupId::parse(group)?;
    let g = groups::describe(&state, &group).await?;
    require_visible(&principal, &g)?;
    let bounds = subscribed_partitions(&state, &g).await?;
    let owner: BTreeMap<&TopicPartition, &str> =
        g.members.iter().flat_map(|m| m.assignment.iter().map(|tp| (tp, m.member_id.as_str()))).collect();
    let committed: BTreeMap<TopicPartition, Offset> = g
        .offsets
        .iter()
        .map(|o| (TopicPartition { topic: o.topic.clone(), partition: o.partition }, o.offset))
        .collect();
    let partitions: Vec<PartitionLag> = bounds
        .iter()
        .map(|(tp, &(log_start_offset, high_watermark))| {
            let committed_offset = committed.get(tp).copied();
            let from = committed_offset.unwrap_or(log_start_offset).max(log_start_offset);
            PartitionLag {
                topic: tp.topic.clone(),
                partition: tp.partition,
                owner: owner.get(tp).map(|m| (*m).to_owned()),
                committed_offset,
                log_start_offset,
                high_watermark,
                lag: high_watermark.saturating_sub(from),
            }
        })
        .collect();
    let subscribed =
        bounds.keys().filter(|tp| g.members.iter().any(|m| m.topics.contains(&tp.topic))).count();
    Ok(Json(GroupDescription {
        group: g.group.clone(),
        state: g.state(subscribed),
        group_epoch: g.group_epoch,
        total_lag: partitions.iter().map(|p| p.lag).sum(),
        members: g.members,
        partitions,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/groups/{group}/offsets/reset",
    tag = "groups",
    summary = "Reset a group's offsets to earliest, latest, a time or explicit offsets (no live members; admin)",
    request_body = ResetBody,
    params(("group" = String, Path)),
    responses(
        (status = 200, body = GroupOffsets), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
)]
pub async fn reset(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(group): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<GroupOffsets>, ApiError> {
    let group = GroupId::parse(group)?;
    require_cluster_admin(&principal)?;
    let req: ResetBody = json_body(&headers, &body)?;
    let existing = match groups::describe(&state, &group).await {
        Ok(g) => Some(g),
        Err(e) if e.code == ErrorCode::GroupNotFound => None,
        Err(e) => return Err(e.into()),
    };
    if existing.as_ref().is_some_and(|g| !g.members.is_empty()) {
        return Err(ApiError::new(ErrorCode::GroupNotEmpty, format!("group {group} has live members")));
    }
    let at = match (req.to.as_deref(), req.timestamp_ms, req.offsets) {
        (None, None, Some(offsets)) => {
            groups::reset(&state, &group, offsets).await?;
            let g = groups::describe(&state, &group).await?;
            return Ok(Json(GroupOffsets { group: group.to_string(), offsets: g.offsets }));
        }
        (Some("earliest"), None, None) => At::Earliest,
        (Some("latest"), None, None) => At::Latest,
        (None, Some(ts), None) if ts >= 0 => At::Time(ts),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"to\": \"earliest\"|\"latest\", \"timestamp_ms\" (≥ 0) or \"offsets\"",
            ));
        }
    };
    let topics: BTreeSet<TopicName> = match req.topics {
        Some(topics) => topics.into_iter().map(TopicName::new).collect::<Result<_, _>>()?,
        None => existing.iter().flat_map(|g| g.offsets.iter().map(|o| o.topic.clone())).collect(),
    };
    if topics.is_empty() {
        return Err(ApiError::invalid("the group has no offsets yet: name the topics to reset"));
    }
    let mut offsets = Vec::new();
    for topic in topics {
        let info = state.controller.describe_topic(&topic).await?;
        for p in info.partitions {
            let (offset, _, _) = resolve(&state, &topic, p.partition, &at).await?;
            offsets.push(OffsetCommit {
                topic: topic.clone(),
                partition: p.partition,
                offset,
                metadata: None,
            });
        }
    }
    groups::reset(&state, &group, offsets).await?;
    let g = groups::describe(&state, &group).await?;
    Ok(Json(GroupOffsets { group: group.to_string(), offsets: g.offsets }))
}

#[utoipa::path(
    delete,
    path = "/v1/groups/{group}",
    tag = "groups",
    summary = "Delete a group and its offsets (no live members; admin)",
    params(("group" = String, Path)),
    responses(
        (status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(group): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let group = GroupId::parse(group)?;
    require_cluster_admin(&principal)?;
    groups::delete(&state, &group).await?;
    Ok(StatusCode::NO_CONTENT)
}
