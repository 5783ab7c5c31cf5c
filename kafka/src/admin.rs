//! The admin surface Kafka's tools and frameworks use: ListGroups,
//! DescribeGroups, DeleteGroups, CreatePartitions, IncrementalAlterConfigs,
//! AlterConfigs and DescribeCluster, over the same controller calls the
//! HTTP API makes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::classic::ClassicInfo;
use shale_controller_client::group::{GroupInfo, MemberInfo};
use shale_core::ErrorCode;
use shale_gateway::service::groups;

use super::errors::{self, NONE};
use super::groups::{group_id, text};
use super::requests::Response;
use super::{CLUSTER_ID, NODE_ID, Session};
use shale_gateway::service::authorize;

/// Whether the principal may see the group: describe on every topic it touches.
pub(crate) fn visible(principal: &Principal, g: &GroupInfo) -> bool {
    g.members
        .iter()
        .flat_map(|m| m.topics.iter())
        .chain(g.offsets.iter().map(|o| &o.topic))
        .all(|t| principal.allows(Operation::Describe, t.as_str()))
}

/// The group's classic side, when that is what Kafka should see: it has
/// members, or the group has no server-side ones.
fn classic_side(g: &GroupInfo) -> Option<&ClassicInfo> {
    g.classic.as_ref().filter(|c| !c.members.is_empty() || g.members.is_empty())
}

/// Kafka's view of a group: (protocol type, state, group type).
fn kafka_kind(g: &GroupInfo) -> (String, String, &'static str) {
    match classic_side(g) {
        Some(c) => (c.protocol_type.clone(), c.state.clone(), "classic"),
        None => {
            // server-side assignment (HTTP members, KIP-848's consumer groups)
            let state = match g.state(0) {
                "empty" => "Empty",
                "reconciling" => "Reconciling",
                _ => "Stable",
            };
            ("consumer".to_owned(), state.to_owned(), "consumer")
        }
    }
}

/// A server-side member's subscription and assignment in the consumer
/// protocol's encodings, which Kafka's tools decode.
fn consumer_protocol(member: &MemberInfo) -> Result<(Bytes, Bytes), String> {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(member.topics.iter().map(|t| text(t.to_string())).collect());
    let mut by_topic: Vec<AssignedTopic> = Vec::new();
    for p in &member.assignment {
        let name = kafka_protocol::messages::TopicName(text(p.topic.to_string()));
        let index = i32::try_from(p.partition).unwrap_or(i32::MAX);
        match by_topic.iter_mut().find(|t| t.topic == name) {
            Some(t) => t.partitions.push(index),
            None => by_topic.push(AssignedTopic::default().with_topic(name).with_partitions(vec![index])),
        }
    }
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(by_topic);
    Ok((versioned(&subscription)?, versioned(&assignment)?))
}

/// A consumer protocol message as the protocol carries it: version 0, then
/// the message at that version.
fn versioned<T: Encodable>(message: &T) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    message.encode(&mut buf, 0).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

impl Session {
    pub(super) async fn list_groups(&self, principal: &Principal, request: ListGroupsRequest) -> Response {
        let groups = match groups::list(&self.state).await {
            Ok(g) => g,
            Err(e) => {
                let code = errors::group_code(&e);
                return Response::ListGroups(ListGroupsResponse::default().with_error_code(code));
            }
        };
        let wanted = |filter: &[StrBytes], value: &str| {
            filter.is_empty() || filter.iter().any(|f| f.as_str().eq_ignore_ascii_case(value))
        };
        let listed = groups
            .iter()
            .filter(|g| visible(principal, g))
            .filter_map(|g| {
                let (protocol_type, state, kind) = kafka_kind(g);
                (wanted(&request.states_filter, &state) && wanted(&request.types_filter, kind)).then(|| {
                    ListedGroup::default()
                        .with_group_id(GroupId(text(g.group.clone())))
                        .with_protocol_type(text(protocol_type))
                        .with_group_state(text(state))
                        .with_group_type(text(kind))
                })
            })
            .collect();
        Response::ListGroups(ListGroupsResponse::default().with_error_code(NONE).with_groups(listed))
    }

    pub(super) async fn describe_groups(
        &self,
        principal: &Principal,
        request: DescribeGroupsRequest,
    ) -> Response {
        let mut described = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let answer =
                DescribedGroup::default().with_group_id(group.clone()).with_authorized_operations(i32::MIN);
            let found = match group_id(&group) {
                Err(code) => Err(code),
                Ok(id) => match groups::describe(&self.state, &id).await {
                    Ok(g) => Ok(Some(g)),
                    Err(e) if e.code == ErrorCode::GroupNotFound => Ok(None),
                    Err(e) => Err(errors::group_code(&e)),
                },
            };
            let answer = match found {
                // Kafka describes a group it does not know as Dead
                Ok(None) => answer.with_group_state(text("Dead")),
                Err(code) => answer.with_error_code(code),
                Ok(Some(g)) if !visible(principal, &g) => {
                    answer.with_error_code(errors::GROUP_AUTHORIZATION_FAILED)
                }
                Ok(Some(g)) => describe(&g, answer),
            };
            described.push(answer);
        }
        Response::DescribeGroups(DescribeGroupsResponse::default().with_groups(described))
    }

    pub(super) async fn delete_groups(
        &self,
        principal: &Principal,
        request: DeleteGroupsRequest,
    ) -> Response {
        let mut results = Vec::with_capacity(request.groups_names.len());
        for group in request.groups_names {
            let code = match group_id(&group) {
                Err(code) => code,
                Ok(_) if authorize(principal, Operation::Admin, "*").is_err() => {
                    errors::GROUP_AUTHORIZATION_FAILED
                }
                Ok(id) => match groups::delete(&self.state, &id).await {
                    Ok(()) => NONE,
                    Err(e) => errors::group_code(&e),
                },
            };
            results.push(DeletableGroupResult::default().with_group_id(group).with_error_code(code));
        }
        Response::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
    }

    pub(super) fn describe_cluster(&self) -> Response {
        let broker = DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(text(self.config.host.clone()))
            .with_port(i32::from(self.config.port));
        Response::DescribeCluster(
            DescribeClusterResponse::default()
                .with_error_code(NONE)
                .with_endpoint_type(1)
                .with_cluster_id(text(CLUSTER_ID))
                .with_controller_id(BrokerId(NODE_ID))
                .with_brokers(vec![broker])
                .with_cluster_authorized_operations(i32::MIN),
        )
    }
}

/// A group as DescribeGroups shows it.
fn describe(g: &GroupInfo, answer: DescribedGroup) -> DescribedGroup {
    let (protocol_type, state, _) = kafka_kind(g);
    let (protocol, members) = match classic_side(g) {
        Some(c) => (
            c.protocol.clone(),
            c.members
                .iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(text(m.member_id.clone()))
                        .with_group_instance_id(m.instance_id.clone().map(text))
                        .with_client_id(text(m.client_id.clone()))
                        .with_client_host(text(m.client_host.clone()))
                        .with_member_metadata(m.metadata.clone().into())
                        .with_member_assignment(m.assignment.clone().into())
                })
                .collect(),
        ),
        None => (
            String::new(),
            g.members
                .iter()
                .map(|m| {
                    let (metadata, assignment) = consumer_protocol(m).unwrap_or_default();
                    DescribedGroupMember::default()
                        .with_member_id(text(m.member_id.clone()))
                        .with_group_instance_id(m.instance_id.clone().map(text))
                        .with_client_id(text("shale"))
                        .with_member_metadata(metadata)
                        .with_member_assignment(assignment)
                })
                .collect(),
        ),
    };
    answer
        .with_error_code(NONE)
        .with_group_state(text(state))
        .with_protocol_type(text(protocol_type))
        .with_protocol_data(text(protocol))
        .with_members(members)
}
