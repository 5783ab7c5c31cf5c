//! KIP-848's consumer group protocol: ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, on Shale's server-side groups. The controller
//! already computes each group's assignment incrementally, as KIP-848 asks a
//! broker to: a partition moves only once its owner has revoked it. So a
//! KIP-848 member is an HTTP member under another protocol, and the two
//! kinds may share a group.
//!
//! - A heartbeat with epoch 0 joins (or rejoins) with its subscription; one
//!   with its epoch keeps the member alive; -1 leaves, -2 (a static member
//!   leaving for a while) keeps its partitions until its session ends.
//! - The answer's assignment is what the member may own now; what it owns
//!   besides it must be revoked. A member acknowledges a revocation by
//!   reporting what it owns without the revoked partitions.
//! - Topics are named by a UUID built from the topic's incarnation and
//!   name (Metadata shows the same one), so every gateway agrees.

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::*;
use shale_controller_client::TopicInfo;
use shale_controller_client::auth::Principal;
use shale_controller_client::group::{GroupInfo, MemberAssignment, MemberHeartbeat, TopicPartition};
use shale_core::{ErrorCode, TopicName};
use shale_gateway::service::ServiceError;
use shale_gateway::service::groups::{self, GroupId};
use uuid::Uuid;

use super::Session;
use super::errors::{self, NONE};
use super::groups::{group_id, member_id, text};
use super::requests::Response;

/// A KIP-848 member's session (Kafka's `group.consumer.session.timeout.ms`).
const SESSION_TIMEOUT_MS: u64 = 45_000;
/// Member epochs with a meaning of their own.
const LEAVE: i32 = -1;
const STATIC_LEAVE: i32 = -2;

/// The UUID clients know a topic by: its incarnation and a hash of its
/// name, never zero, the same on every gateway.
pub fn topic_uuid(info: &TopicInfo) -> Uuid {
    let hash = info
        .name
        .as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    Uuid::from_u64_pair(info.id.max(1), hash)
}

impl Session {
    pub(super) async fn consumer_group_heartbeat(
        &self,
        principal: &Principal,
        request: ConsumerGroupHeartbeatRequest,
    ) -> Response {
        let answer = match self.heartbeat_848(principal, &request).await {
            Ok(answer) => answer,
            Err((code, message)) => {
                tracing::debug!(peer = %self.peer, code, %message, ?request, "consumer group heartbeat refused");
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(text(message)))
                    .with_member_epoch(-1)
            }
        };
        Response::ConsumerGroupHeartbeat(answer)
    }

    async fn heartbeat_848(
        &self,
        principal: &Principal,
        request: &ConsumerGroupHeartbeatRequest,
    ) -> Result<ConsumerGroupHeartbeatResponse, (i16, String)> {
        let fail = |e: ServiceError| {
            let code = match e.code {
                ErrorCode::MemberNotFound | ErrorCode::GroupNotFound => errors::UNKNOWN_MEMBER_ID,
                _ => errors::group_code(&e),
            };
            (code, e.message)
        };
        let group = group_id(&request.group_id).map_err(|code| (code, "invalid group id".to_owned()))?;
        if request.subscribed_topic_regex.as_ref().is_some_and(|r| !r.is_empty()) {
            return Err((
                errors::INVALID_REQUEST,
                "subscribe by topic names: patterns are not supported".into(),
            ));
        }
        // before Kafka 4.0 the broker named a new member; since, the client
        // does, and is answered with its own name
        let named = match request.member_id.as_str() {
            "" => ulid::Ulid::new().to_string(),
            id => id.to_owned(),
        };
        let member = member_id(&named).map_err(|code| (code, format!("member id {named:?}")))?;
        let answered =
            ConsumerGroupHeartbeatResponse::default().with_error_code(NONE).with_member_id(Some(text(named)));
        match request.member_epoch {
            LEAVE => {
                match groups::leave(&self.state, &group, &member).await {
                    Ok(()) => {}
                    Err(e) if matches!(e.code, ErrorCode::MemberNotFound | ErrorCode::GroupNotFound) => {}
                    Err(e) => return Err(fail(e)),
                }
                return Ok(answered.with_member_epoch(LEAVE));
            }
            // the session ends it, if the instance does not come back first
            STATIC_LEAVE => return Ok(answered.with_member_epoch(STATIC_LEAVE)),
            epoch if epoch < 0 => return Err((errors::INVALID_REQUEST, format!("member epoch {epoch}"))),
            _ => {}
        }
        let topics = match &request.subscribed_topic_names {
            Some(names) => Some(self.existing(names).await?),
            None if request.member_epoch == 0 => {
                return Err((errors::INVALID_REQUEST, "a joining member names its topics".into()));
            }
            None => None,
        };
        if topics.as_ref().is_some_and(Vec::is_empty) {
            // nothing to read yet: not a member until a topic it names exists
            let _ = groups::leave(&self.state, &group, &member).await;
            return Ok(answered.with_member_epoch(0).with_heartbeat_interval_ms(5_000).with_assignment(None));
        }
        let heartbeat = |member_epoch| MemberHeartbeat {
            topics: topics.clone(),
            session_timeout_ms: SESSION_TIMEOUT_MS,
            instance_id: request.instance_id.as_ref().map(|i| i.to_string()),
            member_epoch: Some(member_epoch),
        };
        // epoch 0 acknowledges nothing: the member has not reported yet
        let mut a =
            groups::heartbeat(&self.state, principal, &group, &member, heartbeat(0)).await.map_err(fail)?;
        if i64::from(request.member_epoch) > a.member_epoch as i64 {
            return Err((
                errors::FENCED_MEMBER_EPOCH,
                format!("epoch {} is from the future", request.member_epoch),
            ));
        }
        if !a.revoke.is_empty() && self.revoked(request, &a).await {
            let ack = MemberHeartbeat { topics: None, ..heartbeat(a.member_epoch) };
            a = groups::heartbeat(&self.state, principal, &group, &member, ack).await.map_err(fail)?;
        }
        let owned: Vec<TopicPartition> = a
            .assignment
            .iter()
            .map(|p| TopicPartition { topic: p.topic.clone(), partition: p.partition })
            .collect();
        let assignment = self.by_topic(&owned.iter().collect::<Vec<_>>()).await;
        Ok(answered
            .with_member_epoch(i32::try_from(a.member_epoch).unwrap_or(i32::MAX))
            .with_heartbeat_interval_ms(i32::try_from(a.heartbeat_interval_ms).unwrap_or(i32::MAX))
            .with_assignment(Some(
                Assignment::default().with_topic_partitions(
                    assignment
                        .into_iter()
                        .map(|(_, id, partitions)| {
                            TopicPartitions::default().with_topic_id(id).with_partitions(partitions)
                        })
                        .collect(),
                ),
            )))
    }

    /// The named topics that exist; a name no topic can have is refused.
    async fn existing(
        &self,
        names: &[kafka_protocol::messages::TopicName],
    ) -> Result<Vec<TopicName>, (i16, String)> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let topic = TopicName::new(name.0.to_string())
                .map_err(|e| (errors::INVALID_TOPIC_EXCEPTION, e.to_string()))?;
            if self.state.controller.describe_topic(&topic).await.is_ok() {
                out.push(topic);
            }
        }
        Ok(out)
    }

    /// Whether the member reports owning none of the partitions it was asked
    /// to revoke (a report it sends once it has let them go).
    async fn revoked(&self, request: &ConsumerGroupHeartbeatRequest, a: &MemberAssignment) -> bool {
        let Some(owned) = &request.topic_partitions else { return false };
        let revoking = self.by_topic(&a.revoke.iter().collect::<Vec<_>>()).await;
        !revoking.iter().any(|(_, id, partitions)| {
            owned.iter().any(|o| o.topic_id == *id && o.partitions.iter().any(|p| partitions.contains(p)))
        })
    }

    /// Partitions grouped by topic, with the topic's UUID (topics since
    /// deleted are left out).
    async fn by_topic(&self, partitions: &[&TopicPartition]) -> Vec<(TopicName, Uuid, Vec<i32>)> {
        let mut out: Vec<(TopicName, Uuid, Vec<i32>)> = Vec::new();
        for p in partitions {
            let index = i32::try_from(p.partition).unwrap_or(i32::MAX);
            if let Some((_, _, indexes)) = out.iter_mut().find(|(t, _, _)| *t == p.topic) {
                indexes.push(index);
                continue;
            }
            if let Ok(info) = self.state.controller.describe_topic(&p.topic).await {
                out.push((p.topic.clone(), topic_uuid(&info), vec![index]));
            }
        }
        out
    }

    pub(super) async fn consumer_group_describe(
        &self,
        principal: &Principal,
        request: ConsumerGroupDescribeRequest,
    ) -> Response {
        let mut described = Vec::with_capacity(request.group_ids.len());
        for id in request.group_ids {
            let answer =
                DescribedGroup::default().with_group_id(id.clone()).with_authorized_operations(i32::MIN);
            let found = match group_id(&id) {
                Err(code) => Err((code, "invalid group id".to_owned())),
                Ok(group) => self.described(principal, &group).await,
            };
            described.push(match found {
                Ok(g) => self.describe_848(g, answer).await,
                Err((code, message)) => answer.with_error_code(code).with_error_message(Some(text(message))),
            });
        }
        Response::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default().with_groups(described))
    }

    /// The group, if it is a server-side one the principal may see.
    async fn described(&self, principal: &Principal, group: &GroupId) -> Result<GroupInfo, (i16, String)> {
        let g =
            groups::describe(&self.state, group).await.map_err(|e| (errors::group_code(&e), e.message))?;
        if g.classic.as_ref().is_some_and(|c| !c.members.is_empty()) {
            return Err((errors::GROUP_ID_NOT_FOUND, format!("group {group} is a classic group")));
        }
        if !super::admin::visible(principal, &g) {
            return Err((
                errors::GROUP_AUTHORIZATION_FAILED,
                format!("group {group} touches a topic not visible"),
            ));
        }
        Ok(g)
    }

    async fn describe_848(&self, g: GroupInfo, answer: DescribedGroup) -> DescribedGroup {
        let state = match g.state(0) {
            "empty" => "Empty",
            "reconciling" => "Reconciling",
            _ => "Stable",
        };
        let mut members = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let current: Vec<&TopicPartition> = m.assignment.iter().chain(&m.revoking).collect();
            let assignment = self.described_partitions(&current).await;
            let target = self.described_partitions(&m.assignment.iter().collect::<Vec<_>>()).await;
            members.push(
                Member::default()
                    .with_member_id(text(m.member_id.clone()))
                    .with_instance_id(m.instance_id.clone().map(text))
                    .with_member_epoch(i32::try_from(m.member_epoch).unwrap_or(i32::MAX))
                    .with_subscribed_topic_names(
                        m.topics
                            .iter()
                            .map(|t| kafka_protocol::messages::TopicName(text(t.to_string())))
                            .collect(),
                    )
                    .with_assignment(DescribedAssignment::default().with_topic_partitions(assignment))
                    .with_target_assignment(DescribedAssignment::default().with_topic_partitions(target))
                    .with_member_type(1),
            );
        }
        let epoch = i32::try_from(g.group_epoch).unwrap_or(i32::MAX);
        answer
            .with_error_code(NONE)
            .with_group_state(text(state))
            .with_group_epoch(epoch)
            .with_assignment_epoch(epoch)
            .with_assignor_name(text("shale"))
            .with_members(members)
    }

    async fn described_partitions(&self, partitions: &[&TopicPartition]) -> Vec<DescribedPartitions> {
        self.by_topic(partitions)
            .await
            .into_iter()
            .map(|(name, id, indexes)| {
                DescribedPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(kafka_protocol::messages::TopicName(text(name.to_string())))
                    .with_partitions(indexes)
            })
            .collect()
    }
}
