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
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::classic::{
    ClassicAnswer, ClassicJoin, ClassicProtocol, ClassicRequest, ClassicSync,
};
use shale_controller_client::group::validate_id;
use shale_core::TopicName;
use tokio::time::Instant;

use super::Session;
use super::errors::{self, NONE, REBALANCE_IN_PROGRESS, classic_code};
use super::requests::Response;
use shale_gateway::service::authorize;
use shale_gateway::service::groups::{self, GroupId, MemberId};

/// The consumers' protocol type, whose subscriptions name topics.
const CONSUMER: &str = "consumer";
/// Longest a SyncGroup waits for the leader's assignment.
const SYNC_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The topics of a consumer protocol subscription (`version` i16, then
/// the subscription at that version, read at most at the newest known).
pub(crate) fn subscribed_topics(metadata: &Bytes) -> Result<Vec<String>, String> {
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

/// A member id from the wire, parsed once. KIP-848 clients name
/// themselves with a base64 UUID, whose `+` and `/` Shale's ids lack: they
/// are read as `-` and `_` (the URL-safe alphabet), the same way on every
/// request, so the member is the same one throughout.
pub(crate) fn member_id(id: &str) -> Result<MemberId, i16> {
    let id: String = id
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    MemberId::parse(id).map_err(|_| errors::UNKNOWN_MEMBER_ID)
}

/// A group id from the wire, parsed once; INVALID_GROUP_ID if it cannot be one.
pub(crate) fn group_id(id: &kafka_protocol::messages::GroupId) -> Result<GroupId, i16> {
    GroupId::parse(id.0.as_str()).map_err(|_| errors::INVALID_GROUP_ID)
}

pub(crate) fn optional_text(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

impl Session {
    /// Asks the controller until the answer is not `Pending` or `wait` is
    /// over (then None).
    async fn classic_until_done(
        &self,
        group: &GroupId,
        request: ClassicRequest,
        wait: Duration,
    ) -> Result<Option<ClassicAnswer>, i16> {
        let deadline = Instant::now() + wait;
        loop {
            let answer = groups::classic(&self.state, group, request.clone())
                .await
                .map_err(|e| errors::group_code(&e))?;
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
        let group = match group_id(&request.group_id) {
            Ok(g) => g,
            Err(code) => return fail(code),
        };
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
        let Ok(member_id) = MemberId::parse(member_id) else { return fail(errors::UNKNOWN_MEMBER_ID) };
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
                    if authorize(principal, Operation::Consume, name.as_str()).is_err() {
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
            member_id: member_id.to_string(),
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
        let group = match group_id(&request.group_id) {
            Ok(g) => g,
            Err(code) => return fail(code),
        };
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
        let heartbeat = ClassicRequest::Heartbeat {
            member_id: request.member_id.to_string(),
            instance_id: optional_text(&request.group_instance_id),
            generation: request.generation_id,
        };
        let code = match group_id(&request.group_id) {
            Err(code) => code,
            Ok(group) => match groups::classic(&self.state, &group, heartbeat).await {
                Ok(ClassicAnswer::Refused(e)) => classic_code(e),
                Ok(_) => NONE,
                Err(e) => errors::group_code(&e),
            },
        };
        Response::Heartbeat(HeartbeatResponse::default().with_error_code(code))
    }

    pub(super) async fn leave_group(&self, request: LeaveGroupRequest, version: i16) -> Response {
        let members: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| (m.member_id.to_string(), optional_text(&m.group_instance_id)))
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let outcomes = match group_id(&request.group_id) {
            Err(code) => Err(code),
            Ok(group) => {
                let leave = ClassicRequest::Leave { members: members.clone() };
                match groups::classic(&self.state, &group, leave).await {
                    Ok(ClassicAnswer::Left(outcomes)) => Ok(outcomes),
                    Ok(ClassicAnswer::Refused(e)) => Err(classic_code(e)),
                    Ok(other) => {
                        tracing::warn!(?other, "kafka leave: unexpected controller answer");
                        Err(errors::UNKNOWN_SERVER_ERROR)
                    }
                    Err(e) => Err(errors::group_code(&e)),
                }
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
}
