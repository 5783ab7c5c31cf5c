//! OffsetCommit, OffsetFetch and OffsetDelete: a group's committed offsets,
//! fenced by the member's generation (classic) or epoch (KIP-848).

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::*;
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::group::{GroupInfo, OffsetCommit, TopicPartition};
use shale_core::{ErrorCode, TopicName};
use shale_gateway::service::groups::{self, GroupId, MemberId};
use shale_gateway::service::{ServiceError, authorize};

use super::Session;
use super::errors::{self, NONE, REBALANCE_IN_PROGRESS};
use super::groups::{group_id, member_id, subscribed_topics, text};
use super::requests::Response;

impl Session {
    pub(super) async fn offset_commit(
        &self,
        principal: &Principal,
        request: OffsetCommitRequest,
    ) -> Response {
        let group = group_id(&request.group_id);
        let mut offsets = Vec::new();
        let mut refused: Vec<(String, i32, i16)> = Vec::new();
        for t in &request.topics {
            let name = t.name.0.to_string();
            for p in &t.partitions {
                let checked = TopicName::new(name.clone()).map_err(ServiceError::from).and_then(|topic| {
                    authorize(principal, Operation::Consume, topic.as_str())?;
                    let partition =
                        u32::try_from(p.partition_index).map_err(|_| ServiceError::invalid("partition"))?;
                    let offset =
                        u64::try_from(p.committed_offset).map_err(|_| ServiceError::invalid("offset"))?;
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
        let code = match group {
            Err(code) => code,
            Ok(_) if offsets.is_empty() => NONE,
            Ok(group) => self.commit(principal, &group, &request, offsets).await,
        };
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
    async fn commit(
        &self,
        principal: &Principal,
        group: &GroupId,
        request: &OffsetCommitRequest,
        offsets: Vec<OffsetCommit>,
    ) -> i16 {
        let generation = request.generation_id_or_member_epoch;
        let member = match request.member_id.as_str() {
            "" if generation < 0 => None,
            id => match member_id(id) {
                Ok(m) => Some((m, u64::try_from(generation).unwrap_or(u64::MAX))),
                Err(code) => return code,
            },
        };
        let by_member = member.is_some();
        let member = member.as_ref().map(|(m, g)| (m, *g));
        match groups::commit(&self.state, principal, group, member, offsets.clone()).await {
            Ok(()) => NONE,
            Err(e) => match e {
                e if e.code == ErrorCode::StaleMember => match member {
                    Some((m, _)) if self.commit_as_owner(principal, group, m, &offsets).await => NONE,
                    _ => self.stale_generation_code(group).await,
                },
                e if by_member && matches!(e.code, ErrorCode::GroupNotFound | ErrorCode::MemberNotFound) => {
                    errors::UNKNOWN_MEMBER_ID
                }
                e => errors::group_code(&e),
            },
        }
    }

    /// A KIP-848 member's commit at an epoch the controller has moved past,
    /// taken at its current epoch if it still owns (or is revoking) every
    /// partition it commits. Kafka keeps a member's epoch while it revokes;
    /// Shale moves it when the revocation is announced, so a member
    /// committing in its revocation callback presents the epoch before.
    /// A partition that moved on to another member is still refused.
    async fn commit_as_owner(
        &self,
        principal: &Principal,
        group: &GroupId,
        member: &MemberId,
        offsets: &[OffsetCommit],
    ) -> bool {
        let Ok(g) = groups::describe(&self.state, group).await else { return false };
        let Some(m) = g.members.iter().find(|m| m.member_id == member.as_str()) else { return false };
        let holds = |o: &OffsetCommit| {
            m.assignment.iter().chain(&m.revoking).any(|p| p.topic == o.topic && p.partition == o.partition)
        };
        if !offsets.iter().all(holds) {
            return false;
        }
        let at = Some((member, m.member_epoch));
        groups::commit(&self.state, principal, group, at, offsets.to_vec()).await.is_ok()
    }

    /// Kafka's answer to a commit at a generation or epoch not current:
    /// STALE_MEMBER_EPOCH in a server-side (KIP-848) group; in a classic one
    /// REBALANCE_IN_PROGRESS while the leader's assignment is awaited, else
    /// ILLEGAL_GENERATION.
    async fn stale_generation_code(&self, group: &GroupId) -> i16 {
        match groups::describe(&self.state, group).await {
            Ok(g) if !g.members.is_empty() => errors::STALE_MEMBER_EPOCH,
            Ok(g) if g.classic.as_ref().is_some_and(|c| c.state == "CompletingRebalance") => {
                REBALANCE_IN_PROGRESS
            }
            _ => errors::ILLEGAL_GENERATION,
        }
    }

    pub(super) async fn offset_fetch(&self, principal: &Principal, request: OffsetFetchRequest) -> Response {
        let group = match group_id(&request.group_id) {
            Ok(g) => g,
            Err(code) => return Response::OffsetFetch(OffsetFetchResponse::default().with_error_code(code)),
        };
        let offsets = match groups::describe(&self.state, &group).await {
            Ok(g) => g.offsets,
            Err(e) => {
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

impl Session {
    /// Forgets a group's offsets of partitions of topics no member of the
    /// group is subscribed to (those answer GROUP_SUBSCRIBED_TO_TOPIC).
    pub(super) async fn offset_delete(
        &self,
        principal: &Principal,
        request: OffsetDeleteRequest,
    ) -> Response {
        let fail = |code: i16| Response::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code));
        let group = match group_id(&request.group_id) {
            Ok(g) => g,
            Err(code) => return fail(code),
        };
        let info = match groups::describe(&self.state, &group).await {
            Ok(g) => g,
            Err(e) => return fail(errors::group_code(&e)),
        };
        let subscribed = subscribed(&info);
        let mut deleting = Vec::new();
        let mut topics = Vec::with_capacity(request.topics.len());
        for t in &request.topics {
            let name = t.name.0.as_str();
            let code = match TopicName::new(name.to_owned()) {
                Err(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
                Ok(_) if !principal.allows(Operation::Consume, name) => errors::TOPIC_AUTHORIZATION_FAILED,
                Ok(_) if subscribed.contains(name) => errors::GROUP_SUBSCRIBED_TO_TOPIC,
                Ok(topic) => {
                    for p in &t.partitions {
                        if let Ok(partition) = u32::try_from(p.partition_index) {
                            deleting.push(TopicPartition { topic: topic.clone(), partition });
                        }
                    }
                    NONE
                }
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            topics.push(
                OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions),
            );
        }
        if !deleting.is_empty()
            && let Err(e) = groups::delete_offsets(&self.state, &group, deleting).await
        {
            return fail(errors::group_code(&e));
        }
        Response::OffsetDelete(OffsetDeleteResponse::default().with_error_code(NONE).with_topics(topics))
    }
}

/// The topics the group's live members are subscribed to.
fn subscribed(info: &GroupInfo) -> BTreeSet<String> {
    let server_side = info.members.iter().flat_map(|m| m.topics.iter().map(|t| t.to_string()));
    let classic = info
        .classic
        .iter()
        .filter(|c| c.protocol_type == "consumer")
        .flat_map(|c| &c.members)
        .flat_map(|m| subscribed_topics(&Bytes::from(m.metadata.clone())).unwrap_or_default());
    server_side.chain(classic).collect()
}
