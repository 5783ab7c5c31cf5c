//! Kafka's classic group protocol mapped onto Shale's groups, whose
//! assignment the controller computes:
//!
//! - JoinGroup joins (or heartbeats in) the Shale group with the topics of
//!   the member's subscription, and answers with the member as its own
//!   leader and only member, at the member's epoch as the generation.
//! - SyncGroup ignores the assignment the client computed and answers the
//!   controller's, as a consumer protocol assignment; if the epoch moved
//!   since the join, it answers REBALANCE_IN_PROGRESS so the client joins
//!   again.
//! - Heartbeat answers REBALANCE_IN_PROGRESS whenever the controller moved
//!   the member to a new epoch (partitions to revoke or to take up); the
//!   client then commits, joins again and gets its new partitions.
//! - OffsetCommit and OffsetFetch read and write the group's offsets, the
//!   same ones `/v1/groups/{group}/offsets` shows.
//!
//! So HTTP members and Kafka members of one group share its partitions and
//! its committed offsets.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::group::{
    CommitOffsets, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS, MemberAssignment, MemberHeartbeat,
    OffsetCommit, validate_id,
};
use shale_core::{ErrorCode, TopicName};

use super::Session;
use super::errors::{self, NONE, REBALANCE_IN_PROGRESS};
use super::requests::Response;
use crate::api::{ApiError, require};

/// The only protocol type served: consumers (not Connect workers).
const CONSUMER: &str = "consumer";

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A Kafka generation for a Shale member epoch.
fn generation(epoch: u64) -> i32 {
    i32::try_from(epoch).unwrap_or(i32::MAX)
}

/// The topics of a consumer protocol subscription (`version` i16, then
/// the subscription at that version, read at most at the newest known).
fn subscribed_topics(metadata: &Bytes) -> Result<Vec<String>, String> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Err("subscription metadata too short".into());
    }
    let version = buf.get_i16().clamp(0, 3);
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// The member's partitions as a consumer protocol assignment (version 0,
/// which every client reads): what it owns and does not have to revoke.
fn assignment_bytes(answer: &MemberAssignment) -> Result<Bytes, String> {
    let mut by_topic: Vec<AssignedTopic> = Vec::new();
    for p in &answer.assignment {
        let revoked = answer.revoke.iter().any(|r| r.topic == p.topic && r.partition == p.partition);
        if revoked {
            continue;
        }
        let name = kafka_protocol::messages::TopicName(text(p.topic.to_string()));
        let index = i32::try_from(p.partition).unwrap_or(i32::MAX);
        match by_topic.iter_mut().find(|t| t.topic == name) {
            Some(t) => t.partitions.push(index),
            None => by_topic.push(AssignedTopic::default().with_topic(name).with_partitions(vec![index])),
        }
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(by_topic);
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    assignment.encode(&mut buf, 0).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// A member id for a client that joins without one.
fn new_member_id(client_id: &str) -> String {
    let client: String = client_id
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    let client = if client.is_empty() { "kafka".to_owned() } else { client };
    format!("{client}-{}", ulid::Ulid::new())
}

impl Session {
    pub(super) async fn join_group(
        &self,
        principal: &Principal,
        request: JoinGroupRequest,
        version: i16,
        client_id: &str,
    ) -> Response {
        let fail = |code: i16| {
            Response::JoinGroup(JoinGroupResponse::default().with_error_code(code).with_generation_id(-1))
        };
        let group = request.group_id.0.to_string();
        if validate_id("a group id", &group).is_err() {
            return fail(errors::INVALID_GROUP_ID);
        }
        if request.protocol_type.as_str() != CONSUMER {
            return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
        }
        let Some(protocol) = request.protocols.first() else {
            return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
        };
        let session_timeout_ms = u64::try_from(request.session_timeout_ms).unwrap_or(0);
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&session_timeout_ms) {
            return fail(errors::INVALID_SESSION_TIMEOUT);
        }
        let mut member = request.member_id.to_string();
        if member.is_empty() {
            member = new_member_id(client_id);
            if version >= 4 {
                // Kafka's handshake: the client joins again with this id
                return Response::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(errors::MEMBER_ID_REQUIRED)
                        .with_generation_id(-1)
                        .with_member_id(text(member)),
                );
            }
        }
        if validate_id("a member id", &member).is_err() {
            return fail(errors::UNKNOWN_MEMBER_ID);
        }
        let topics = match subscribed_topics(&protocol.metadata) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "kafka join: subscription unreadable");
                return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
            }
        };
        let mut names = Vec::with_capacity(topics.len());
        for t in topics {
            let Ok(name) = TopicName::new(t) else { return fail(errors::INVALID_TOPIC_EXCEPTION) };
            if require(principal, Operation::Consume, name.as_str()).is_err() {
                return fail(errors::TOPIC_AUTHORIZATION_FAILED);
            }
            names.push(name);
        }
        let instance_id = request.group_instance_id.as_ref().map(|i| i.to_string());
        if instance_id.as_ref().is_some_and(|i| validate_id("an instance id", i).is_err()) {
            return fail(errors::INVALID_REQUEST);
        }
        let heartbeat =
            MemberHeartbeat { topics: Some(names), session_timeout_ms, instance_id, member_epoch: None };
        match self.state.controller.group_heartbeat(&group, &member, heartbeat).await {
            Ok(answer) => {
                let me = JoinGroupResponseMember::default()
                    .with_member_id(text(member.clone()))
                    .with_group_instance_id(request.group_instance_id.clone())
                    .with_metadata(protocol.metadata.clone());
                Response::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(NONE)
                        .with_generation_id(generation(answer.member_epoch))
                        .with_protocol_type(Some(text(CONSUMER)))
                        .with_protocol_name(Some(protocol.name.clone()))
                        .with_leader(text(member.clone()))
                        .with_member_id(text(member))
                        .with_members(vec![me]),
                )
            }
            Err(e) => fail(errors::group_code(&ApiError::from(e))),
        }
    }

    pub(super) async fn sync_group(&self, principal: &Principal, request: SyncGroupRequest) -> Response {
        let fail = |code: i16| Response::SyncGroup(SyncGroupResponse::default().with_error_code(code));
        let (group, member) = (request.group_id.0.to_string(), request.member_id.to_string());
        let epoch = match self.member_heartbeat(&group, &member, request.generation_id).await {
            Ok(answer) => answer,
            Err(code) => return fail(code),
        };
        if generation(epoch.member_epoch) != request.generation_id {
            return fail(REBALANCE_IN_PROGRESS);
        }
        if let Some(p) =
            epoch.assignment.iter().find(|p| !principal.allows(Operation::Consume, p.topic.as_str()))
        {
            tracing::debug!(topic = %p.topic, "kafka sync: a partition the principal may not read");
            return fail(errors::TOPIC_AUTHORIZATION_FAILED);
        }
        match assignment_bytes(&epoch) {
            Ok(bytes) => Response::SyncGroup(
                SyncGroupResponse::default()
                    .with_error_code(NONE)
                    .with_protocol_type(request.protocol_type)
                    .with_protocol_name(request.protocol_name)
                    .with_assignment(bytes),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "encoding a kafka assignment failed");
                fail(errors::UNKNOWN_SERVER_ERROR)
            }
        }
    }

    pub(super) async fn heartbeat(&self, request: HeartbeatRequest) -> Response {
        let (group, member) = (request.group_id.0.to_string(), request.member_id.to_string());
        let code = match self.member_heartbeat(&group, &member, request.generation_id).await {
            Ok(answer) if generation(answer.member_epoch) != request.generation_id => REBALANCE_IN_PROGRESS,
            Ok(_) => NONE,
            Err(code) => code,
        };
        Response::Heartbeat(HeartbeatResponse::default().with_error_code(code))
    }

    /// A heartbeat of a member that joined, presenting its generation.
    async fn member_heartbeat(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Result<MemberAssignment, i16> {
        if validate_id("a group id", group).is_err() {
            return Err(errors::INVALID_GROUP_ID);
        }
        if validate_id("a member id", member).is_err() {
            return Err(errors::UNKNOWN_MEMBER_ID);
        }
        let epoch = u64::try_from(generation).map_err(|_| errors::ILLEGAL_GENERATION)?;
        let heartbeat = MemberHeartbeat {
            topics: None,
            // unchanged: a heartbeat without topics keeps the member's session
            session_timeout_ms: 0,
            instance_id: None,
            member_epoch: Some(epoch),
        };
        self.state.controller.group_heartbeat(group, member, heartbeat).await.map_err(|e| {
            let e = ApiError::from(e);
            if matches!(e.code, ErrorCode::GroupNotFound) {
                errors::UNKNOWN_MEMBER_ID
            } else {
                errors::group_code(&e)
            }
        })
    }

    pub(super) async fn leave_group(&self, request: LeaveGroupRequest, version: i16) -> Response {
        let group = request.group_id.0.to_string();
        let members: Vec<(String, Option<StrBytes>)> = if version >= 3 {
            request.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.clone())).collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let mut answers = Vec::with_capacity(members.len());
        let mut first_error = NONE;
        for (member, instance) in members {
            let code = match self.state.controller.leave_group(&group, &member).await {
                Ok(()) => NONE,
                Err(e) => errors::group_code(&ApiError::from(e)),
            };
            if first_error == NONE {
                first_error = code;
            }
            answers.push(
                MemberResponse::default()
                    .with_member_id(text(member))
                    .with_group_instance_id(instance)
                    .with_error_code(code),
            );
        }
        // before v3 one member leaves, and its error is the answer's
        let response = if version >= 3 {
            LeaveGroupResponse::default().with_members(answers)
        } else {
            LeaveGroupResponse::default().with_error_code(first_error)
        };
        Response::LeaveGroup(response)
    }

    pub(super) async fn offset_commit(
        &self,
        principal: &Principal,
        request: OffsetCommitRequest,
    ) -> Response {
        let group = request.group_id.0.to_string();
        let mut offsets = Vec::new();
        let mut refused: Vec<(String, i32, i16)> = Vec::new();
        for t in &request.topics {
            let name = t.name.0.to_string();
            for p in &t.partitions {
                let checked = TopicName::new(name.clone()).map_err(ApiError::from).and_then(|topic| {
                    require(principal, Operation::Consume, topic.as_str())?;
                    let partition =
                        u32::try_from(p.partition_index).map_err(|_| ApiError::invalid("partition"))?;
                    let offset =
                        u64::try_from(p.committed_offset).map_err(|_| ApiError::invalid("offset"))?;
                    let metadata =
                        p.committed_metadata.as_ref().map(|m| m.to_string()).filter(|m| !m.is_empty());
                    Ok(OffsetCommit { topic, partition, offset, metadata })
                });
                match checked {
                    Ok(o) => offsets.push(o),
                    Err(e) => refused.push((name.clone(), p.partition_index, errors::code(&e))),
                }
            }
        }
        let code = if offsets.is_empty() { NONE } else { self.commit(&group, &request, offsets).await };
        let topics = request
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let own = refused
                            .iter()
                            .find(|(n, i, _)| n == t.name.0.as_str() && *i == p.partition_index)
                            .map_or(code, |(_, _, c)| *c);
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(own)
                    })
                    .collect();
                OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
            })
            .collect();
        Response::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
    }

    /// Commits as the member, at its current epoch: an eager client commits
    /// with the generation it joined at after the controller announced a
    /// newer epoch, which Shale would refuse as stale. The controller still
    /// refuses partitions the member neither owns nor is revoking, which is
    /// what keeps a zombie from overwriting another member's progress.
    /// Without a member (generation -1, the client assigns its own
    /// partitions), the group must have no live members, as in Kafka.
    async fn commit(&self, group: &str, request: &OffsetCommitRequest, offsets: Vec<OffsetCommit>) -> i16 {
        if validate_id("a group id", group).is_err() {
            return errors::INVALID_GROUP_ID;
        }
        let member_id = request.member_id.to_string();
        let member = if request.generation_id_or_member_epoch < 0 && member_id.is_empty() {
            None
        } else {
            match self.state.controller.describe_group(group).await {
                Ok(g) => match g.members.iter().find(|m| m.member_id == member_id) {
                    Some(m) => Some((member_id, m.member_epoch)),
                    None => return errors::UNKNOWN_MEMBER_ID,
                },
                Err(e) => {
                    let e = ApiError::from(e);
                    return if e.code == ErrorCode::GroupNotFound {
                        errors::UNKNOWN_MEMBER_ID
                    } else {
                        errors::group_code(&e)
                    };
                }
            }
        };
        match self.state.controller.commit_offsets(group, CommitOffsets { member, offsets }).await {
            Ok(()) => NONE,
            Err(e) => {
                let e = ApiError::from(e);
                // Kafka's answer to a member whose partitions moved on
                if e.code == ErrorCode::StaleMember { REBALANCE_IN_PROGRESS } else { errors::group_code(&e) }
            }
        }
    }

    pub(super) async fn offset_fetch(&self, principal: &Principal, request: OffsetFetchRequest) -> Response {
        let group = request.group_id.0.to_string();
        if validate_id("a group id", &group).is_err() {
            return Response::OffsetFetch(
                OffsetFetchResponse::default().with_error_code(errors::INVALID_GROUP_ID),
            );
        }
        let offsets = match self.state.controller.describe_group(&group).await {
            Ok(g) => g.offsets,
            Err(e) => {
                let e = ApiError::from(e);
                if e.code != ErrorCode::GroupNotFound {
                    return Response::OffsetFetch(
                        OffsetFetchResponse::default().with_error_code(errors::group_code(&e)),
                    );
                }
                Vec::new()
            }
        };
        // null topics: every committed offset of the group
        let asked: Vec<(String, Vec<i32>)> = match &request.topics {
            Some(topics) => {
                topics.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect()
            }
            None => {
                let mut all: Vec<(String, Vec<i32>)> = Vec::new();
                for o in &offsets {
                    let index = i32::try_from(o.partition).unwrap_or(i32::MAX);
                    match all.iter_mut().find(|(t, _)| t == o.topic.as_str()) {
                        Some((_, p)) => p.push(index),
                        None => all.push((o.topic.to_string(), vec![index])),
                    }
                }
                all
            }
        };
        let topics = asked
            .into_iter()
            .map(|(name, partitions)| {
                let allowed = principal.allows(Operation::Consume, &name)
                    || principal.allows(Operation::Describe, &name);
                let partitions = partitions
                    .into_iter()
                    .map(|index| {
                        let committed = offsets
                            .iter()
                            .find(|o| o.topic.as_str() == name && i64::from(o.partition) == i64::from(index));
                        let answer = OffsetFetchResponsePartition::default()
                            .with_partition_index(index)
                            .with_committed_leader_epoch(-1);
                        match committed {
                            _ if !allowed => answer
                                .with_committed_offset(-1)
                                .with_error_code(errors::TOPIC_AUTHORIZATION_FAILED),
                            Some(o) => answer
                                .with_committed_offset(i64::try_from(o.offset).unwrap_or(i64::MAX))
                                .with_metadata(Some(text(o.metadata.clone().unwrap_or_default()))),
                            None => answer.with_committed_offset(-1).with_metadata(Some(text(""))),
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(text(name)))
                    .with_partitions(partitions)
            })
            .collect();
        Response::OffsetFetch(OffsetFetchResponse::default().with_error_code(NONE).with_topics(topics))
    }
}
