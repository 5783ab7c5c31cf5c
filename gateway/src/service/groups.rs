//! Group membership, for HTTP members (server-side assignment) and Kafka
//! members (the classic protocol and KIP-848's heartbeat): ids parsed once,
//! every topic a member reads or commits checked against its grants.

use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::classic::{ClassicAnswer, ClassicRequest};
use shale_controller_client::group::{
    CommitOffsets, GroupInfo, MemberAssignment, MemberHeartbeat, OffsetCommit, TopicPartition, validate_id,
};

use super::{ServiceError, authorize};
use crate::state::AppState;

/// A group's id, valid by construction: 1 to 255 of `[a-zA-Z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupId(String);

/// A member's id within a group, valid by the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberId(String);

impl GroupId {
    pub fn parse(id: impl Into<String>) -> Result<Self, ServiceError> {
        let id = id.into();
        validate_id("a group id", &id).map_err(ServiceError::invalid)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl MemberId {
    pub fn parse(id: impl Into<String>) -> Result<Self, ServiceError> {
        let id = id.into();
        validate_id("a member id", &id).map_err(ServiceError::invalid)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Joins the group or heartbeats in it, subscribing to topics the
/// principal may consume.
pub async fn heartbeat(
    state: &AppState,
    principal: &Principal,
    group: &GroupId,
    member: &MemberId,
    heartbeat: MemberHeartbeat,
) -> Result<MemberAssignment, ServiceError> {
    for topic in heartbeat.topics.iter().flatten() {
        authorize(principal, Operation::Consume, topic.as_str())?;
    }
    Ok(state.controller.group_heartbeat(group.as_str(), member.as_str(), heartbeat).await?)
}

pub async fn leave(state: &AppState, group: &GroupId, member: &MemberId) -> Result<(), ServiceError> {
    Ok(state.controller.leave_group(group.as_str(), member.as_str()).await?)
}

/// A step of Kafka's classic protocol (join, sync, heartbeat, leave).
pub async fn classic(
    state: &AppState,
    group: &GroupId,
    request: ClassicRequest,
) -> Result<ClassicAnswer, ServiceError> {
    Ok(state.controller.classic_group(group.as_str(), request).await?)
}

/// Commits offsets of topics the principal may consume, fenced by the
/// member's epoch or generation when one is given.
pub async fn commit(
    state: &AppState,
    principal: &Principal,
    group: &GroupId,
    member: Option<(&MemberId, u64)>,
    offsets: Vec<OffsetCommit>,
) -> Result<(), ServiceError> {
    for o in &offsets {
        authorize(principal, Operation::Consume, o.topic.as_str())?;
    }
    let member = member.map(|(m, epoch)| (m.as_str().to_owned(), epoch));
    Ok(state.controller.commit_offsets(group.as_str(), CommitOffsets { member, offsets }).await?)
}

/// A group with its members and offsets.
pub async fn describe(state: &AppState, group: &GroupId) -> Result<GroupInfo, ServiceError> {
    Ok(state.controller.describe_group(group.as_str()).await?)
}

/// Every group.
pub async fn list(state: &AppState) -> Result<Vec<GroupInfo>, ServiceError> {
    Ok(state.controller.list_groups().await?)
}

/// Deletes a group without live members, with its offsets.
pub async fn delete(state: &AppState, group: &GroupId) -> Result<(), ServiceError> {
    Ok(state.controller.delete_group(group.as_str()).await?)
}

/// Sets the offsets of a group without live members.
pub async fn reset(
    state: &AppState,
    group: &GroupId,
    offsets: Vec<OffsetCommit>,
) -> Result<(), ServiceError> {
    Ok(state.controller.reset_offsets(group.as_str(), offsets).await?)
}

/// Forgets the group's committed offsets of these partitions.
pub async fn delete_offsets(
    state: &AppState,
    group: &GroupId,
    partitions: Vec<TopicPartition>,
) -> Result<(), ServiceError> {
    Ok(state.controller.delete_offsets(group.as_str(), partitions).await?)
}
