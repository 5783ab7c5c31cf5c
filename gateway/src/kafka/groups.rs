//! Kafka's group APIs. The classic protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) is served as Kafka serves it, by the controller
//! (`shale_controller_client::classic`): the leader gets every member's
//! metadata and its assignment is relayed as opaque bytes, so any
//! client-side assignor and any protocol type (consumers, Connect workers)
//! works. A join or sync that waits for other members is asked of the
//! controller again until it completes.
//!
//! OffsetCommit and OffsetFetch read and write the group's offsets, the
//! same ones `/v1/groups/{group}/offsets` shows.

use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::classic::{
    ClassicAnswer, ClassicJoin, ClassicProtocol, ClassicRequest, ClassicSync,
};
use shale_controller_client::group::{CommitOffsets, OffsetCommit, validate_id};
use shale_core::{ErrorCode, TopicName};
use tokio::time::Instant;

use super::Session;
use super::errors::{self, NONE, REBALANCE_IN_PROGRESS, classic_code};
use super::requests::Response;
use crate::api::{ApiError, require};

/// The consumers' protocol type, whose subscriptions name topics.
const CONSUMER: &str = "consumer";
/// Longest a SyncGroup waits for the leader's assignment.
const SYNC_WAIT: Duration = Duration::from_secs(60);

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
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

fn optional_text(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

impl Session {
    /// Asks the controller until the answer is not `Pending` or `wait` is
    /// over (then None).
    async fn classic_until_done(
        &self,
        group: &str,
        request: ClassicRequest,
        wait: Duration,
    ) -> Result<Option<ClassicAnswer>, i16> {
        let deadline = Instant::now() + wait;
        loop {
            let answer = self
                .state
                .controller
                .classic_group(group, request.clone())
                .await
                .map_err(|e| errors::group_code(&ApiError::from(e)))?;
            if answer != ClassicAnswer::Pending {
                return Ok(Some(answer));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

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
        let instance_id = optional_text(&request.group_instance_id);
        if instance_id.as_ref().is_some_and(|i| validate_id("an instance id", i).is_err()) {
            return fail(errors::INVALID_REQUEST);
        }
        let mut member_id = request.member_id.to_string();
        let fresh = member_id.is_empty();
        if fresh {
            member_id = new_member_id(client_id);
            // Kafka's handshake for dynamic members: join again with this id
            if version >= 4 && instance_id.is_none() {
                return Response::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(errors::MEMBER_ID_REQUIRED)
                        .with_generation_id(-1)
                        .with_member_id(text(member_id)),
                );
            }
        }
        if validate_id("a member id", &member_id).is_err() {
            return fail(errors::UNKNOWN_MEMBER_ID);
        }
        let protocol_type = request.protocol_type.to_string();
        if protocol_type == CONSUMER {
            // a consumer may only join for topics it may read
            for protocol in &request.protocols {
                let topics = match subscribed_topics(&protocol.metadata) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "kafka join: subscription unreadable");
                        return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
                    }
                };
                for t in topics {
                    let Ok(name) = TopicName::new(t) else { return fail(errors::INVALID_TOPIC_EXCEPTION) };
                    if require(principal, Operation::Consume, name.as_str()).is_err() {
                        return fail(errors::TOPIC_AUTHORIZATION_FAILED);
                    }
                }
            }
        }
        let session_timeout_ms = u64::try_from(request.session_timeout_ms).unwrap_or(0);
        // before v1 the session timeout is also the rebalance timeout
        let rebalance_timeout_ms = if version >= 1 {
            u64::try_from(request.rebalance_timeout_ms).unwrap_or(0)
        } else {
            session_timeout_ms
        };
        let join = ClassicJoin {
            member_id: member_id.clone(),
            fresh,
            instance_id,
            protocol_type,
            protocols: request
                .protocols
                .iter()
                .map(|p| ClassicProtocol { name: p.name.to_string(), metadata: p.metadata.to_vec() })
                .collect(),
            session_timeout_ms,
            rebalance_timeout_ms,
            client_id: client_id.to_owned(),
            client_host: format!("/{}", self.peer.ip()),
        };
        // the round ends by the rebalance timeout; a little more for the last ask
        let wait = Duration::from_millis(rebalance_timeout_ms.saturating_add(5_000));
        match self.classic_until_done(&group, ClassicRequest::Join(join), wait).await {
            Ok(Some(ClassicAnswer::Joined {
                generation,
                protocol_type,
                protocol,
                leader,
                member_id,
                members,
            })) => {
                let members = members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(text(m.member_id))
                            .with_group_instance_id(m.instance_id.map(text))
                            .with_metadata(m.metadata.into())
                    })
                    .collect();
                Response::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(NONE)
                        .with_generation_id(generation)
                        .with_protocol_type(Some(text(protocol_type)))
                        .with_protocol_name(Some(text(protocol)))
                        .with_leader(text(leader))
                        .with_member_id(text(member_id))
                        .with_members(members),
                )
            }
            Ok(Some(ClassicAnswer::Refused(e))) => fail(classic_code(e)),
            Ok(Some(other)) => {
                tracing::warn!(?other, "kafka join: unexpected controller answer");
                fail(errors::UNKNOWN_SERVER_ERROR)
            }
            Ok(None) => fail(REBALANCE_IN_PROGRESS),
            Err(code) => fail(code),
        }
    }

    pub(super) async fn sync_group(&self, request: SyncGroupRequest) -> Response {
        let fail = |code: i16| Response::SyncGroup(SyncGroupResponse::default().with_error_code(code));
        let group = request.group_id.0.to_string();
        if validate_id("a group id", &group).is_err() {
            return fail(errors::INVALID_GROUP_ID);
        }
        let sync = ClassicSync {
            member_id: request.member_id.to_string(),
            instance_id: optional_text(&request.group_instance_id),
            generation: request.generation_id,
            assignments: request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
                .collect(),
        };
        match self.classic_until_done(&group, ClassicRequest::Sync(sync), SYNC_WAIT).await {
            Ok(Some(ClassicAnswer::Synced { protocol_type, protocol, assignment })) => {
                let mismatch = request.protocol_type.as_ref().is_some_and(|t| t.as_str() != protocol_type)
                    || request.protocol_name.as_ref().is_some_and(|p| p.as_str() != protocol);
                if mismatch {
                    return fail(errors::INCONSISTENT_GROUP_PROTOCOL);
                }
                Response::SyncGroup(
                    SyncGroupResponse::default()
                        .with_error_code(NONE)
                        .with_protocol_type(Some(text(protocol_type)))
                        .with_protocol_name(Some(text(protocol)))
                        .with_assignment(assignment.into()),
                )
            }
            Ok(Some(ClassicAnswer::Refused(e))) => fail(classic_code(e)),
            Ok(Some(other)) => {
                tracing::warn!(?other, "kafka sync: unexpected controller answer");
                fail(errors::UNKNOWN_SERVER_ERROR)
            }
            Ok(None) => fail(REBALANCE_IN_PROGRESS),
            Err(code) => fail(code),
        }
    }

    pub(super) async fn heartbeat(&self, request: HeartbeatRequest) -> Response {
        let group = request.group_id.0.to_string();
        let heartbeat = ClassicRequest::Heartbeat {
            member_id: request.member_id.to_string(),
            instance_id: optional_text(&request.group_instance_id),
            generation: request.generation_id,
        };
        let code = if validate_id("a group id", &group).is_err() {
            errors::INVALID_GROUP_ID
        } else {
            match self.state.controller.classic_group(&group, heartbeat).await {
                Ok(ClassicAnswer::Refused(e)) => classic_code(e),
                Ok(_) => NONE,
                Err(e) => errors::group_code(&ApiError::from(e)),
            }
        };
        Response::Heartbeat(HeartbeatResponse::default().with_error_code(code))
    }

    pub(super) async fn leave_group(&self, request: LeaveGroupRequest, version: i16) -> Response {
        let group = request.group_id.0.to_string();
        let members: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| (m.member_id.to_string(), optional_text(&m.group_instance_id)))
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let outcomes = if validate_id("a group id", &group).is_err() {
            Err(errors::INVALID_GROUP_ID)
        } else {
            let leave = ClassicRequest::Leave { members: members.clone() };
            match self.state.controller.classic_group(&group, leave).await {
                Ok(ClassicAnswer::Left(outcomes)) => Ok(outcomes),
                Ok(ClassicAnswer::Refused(e)) => Err(classic_code(e)),
                Ok(other) => {
                    tracing::warn!(?other, "kafka leave: unexpected controller answer");
                    Err(errors::UNKNOWN_SERVER_ERROR)
                }
                Err(e) => Err(errors::group_code(&ApiError::from(e))),
            }
        };
        let response = match outcomes {
            Err(code) => LeaveGroupResponse::default().with_error_code(code),
            // before v3 one member leaves, and its error is the answer's
            Ok(outcomes) if version < 3 => LeaveGroupResponse::default()
                .with_error_code(outcomes.first().copied().flatten().map_or(NONE, classic_code)),
            Ok(outcomes) => LeaveGroupResponse::default().with_members(
                members
                    .into_iter()
                    .zip(outcomes)
                    .map(|((member, instance), outcome)| {
                        MemberResponse::default()
                            .with_member_id(text(member))
                            .with_group_instance_id(instance.map(text))
                            .with_error_code(outcome.map_or(NONE, classic_code))
                    })
                    .collect(),
            ),
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

    /// Commits as the member at the generation it presents; the controller
    /// refuses a stale one, so a member that missed a rebalance cannot
    /// overwrite another's progress. Without a member (generation -1, a
    /// client that assigns its own partitions), the group must have no live
    /// members, as in Kafka.
    async fn commit(&self, group: &str, request: &OffsetCommitRequest, offsets: Vec<OffsetCommit>) -> i16 {
        if validate_id("a group id", group).is_err() {
            return errors::INVALID_GROUP_ID;
        }
        let member_id = request.member_id.to_string();
        let generation = request.generation_id_or_member_epoch;
        let member = (generation >= 0 || !member_id.is_empty())
            .then(|| (member_id, u64::try_from(generation).unwrap_or(u64::MAX)));
        let by_member = member.is_some();
        match self.state.controller.commit_offsets(group, CommitOffsets { member, offsets }).await {
            Ok(()) => NONE,
            Err(e) => match ApiError::from(e) {
                e if e.code == ErrorCode::StaleMember => self.stale_generation_code(group).await,
                e if by_member && matches!(e.code, ErrorCode::GroupNotFound | ErrorCode::MemberNotFound) => {
                    errors::UNKNOWN_MEMBER_ID
                }
                e => errors::group_code(&e),
            },
        }
    }

    /// Kafka's answer to a commit at a generation not current:
    /// REBALANCE_IN_PROGRESS while the leader's assignment is awaited, else
    /// ILLEGAL_GENERATION.
    async fn stale_generation_code(&self, group: &str) -> i16 {
        match self.state.controller.describe_group(group).await {
            Ok(g) if g.classic.as_ref().is_some_and(|c| c.state == "CompletingRebalance") => {
                REBALANCE_IN_PROGRESS
            }
            _ => errors::ILLEGAL_GENERATION,
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
