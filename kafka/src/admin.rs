//! The admin surface Kafka's tools and frameworks use: ListGroups,
//! DescribeGroups, DeleteGroups, CreatePartitions, IncrementalAlterConfigs,
//! AlterConfigs and DescribeCluster, over the same controller calls the
//! HTTP API makes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use serde_json::{Map, Value};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::classic::ClassicInfo;
use shale_controller_client::group::{GroupInfo, MemberInfo};
use shale_core::{ErrorCode, TopicName};
use shale_gateway::service::groups;

use super::errors::{self, NONE};
use super::groups::group_id;
use super::metadata::{TOPIC_RESOURCE, topic_config};
use super::requests::Response;
use super::{CLUSTER_ID, NODE_ID, Session};
use shale_gateway::service::{ServiceError, authorize};

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Whether the principal may see the group: describe on every topic it touches.
fn visible(principal: &Principal, g: &GroupInfo) -> bool {
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

    /// Partitions are added; records already written stay where they are,
    /// and new keyed records follow the new count, as in Kafka.
    pub(super) async fn create_partitions(
        &self,
        principal: &Principal,
        request: CreatePartitionsRequest,
    ) -> Response {
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let outcome = self.grow(principal, &topic, request.validate_only).await;
            let (code, message) = match outcome {
                Ok(()) => (NONE, None),
                Err((code, message)) => (code, Some(text(message))),
            };
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(topic.name)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        Response::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
    }

    async fn grow(
        &self,
        principal: &Principal,
        topic: &create_partitions_request::CreatePartitionsTopic,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let fail = |e: ServiceError| (errors::code(&e), e.message);
        let name = TopicName::new(topic.name.0.to_string()).map_err(|e| fail(e.into()))?;
        authorize(principal, Operation::Admin, name.as_str()).map_err(fail)?;
        if topic.assignments.is_some() {
            return Err((
                errors::INVALID_REQUEST,
                "replica assignments do not apply: the object store replicates".into(),
            ));
        }
        let count = u32::try_from(topic.count)
            .map_err(|_| (errors::INVALID_PARTITIONS, "a negative count".into()))?;
        let info = self.state.controller.describe_topic(&name).await.map_err(|e| fail(e.into()))?;
        if count <= info.partitions.len() as u32 {
            let has = info.partitions.len();
            return Err((
                errors::INVALID_PARTITIONS,
                format!("topic {name} has {has} partitions; it can only grow"),
            ));
        }
        if validate_only {
            return Ok(());
        }
        self.state.controller.update_topic(name, None, Some(count)).await.map_err(|e| fail(e.into()))?;
        Ok(())
    }

    pub(super) async fn incremental_alter_configs(
        &self,
        principal: &Principal,
        request: IncrementalAlterConfigsRequest,
    ) -> Response {
        let patches = request.resources.into_iter().map(|r| {
            let patch = incremental_patch(&r.configs);
            (r.resource_type, r.resource_name, patch)
        });
        let responses = self
            .alter_all(principal, patches, request.validate_only)
            .await
            .into_iter()
            .map(|(resource_type, resource_name, code, message)| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(resource_name)
                    .with_error_code(code)
                    .with_error_message(message.map(text))
            })
            .collect();
        Response::IncrementalAlterConfigs(
            IncrementalAlterConfigsResponse::default().with_responses(responses),
        )
    }

    /// The legacy AlterConfigs: the configs given replace all the topic's.
    pub(super) async fn alter_configs(
        &self,
        principal: &Principal,
        request: AlterConfigsRequest,
    ) -> Response {
        let patches = request.resources.into_iter().map(|r| {
            let given = r.configs.iter().map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str())));
            let patch = topic_config(given).map(|set| {
                let mut all: Map<String, Value> =
                    SHALE_KEYS.iter().map(|(_, key)| ((*key).to_owned(), Value::Null)).collect();
                all.extend(set);
                all
            });
            (r.resource_type, r.resource_name, patch)
        });
        let responses = self
            .alter_all(principal, patches, request.validate_only)
            .await
            .into_iter()
            .map(|(resource_type, resource_name, code, message)| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(resource_name)
                    .with_error_code(code)
                    .with_error_message(message.map(text))
            })
            .collect();
        Response::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
    }

    /// Applies each resource's patch in turn: per resource, its type and
    /// name, the error code and message.
    async fn alter_all(
        &self,
        principal: &Principal,
        patches: impl Iterator<Item = (i8, StrBytes, Result<Map<String, Value>, String>)>,
        validate_only: bool,
    ) -> Vec<(i8, StrBytes, i16, Option<String>)> {
        let mut outcomes = Vec::new();
        for (resource_type, name, patch) in patches {
            let (code, message) =
                self.alter(principal, resource_type, name.as_str(), patch, validate_only).await;
            outcomes.push((resource_type, name, code, message));
        }
        outcomes
    }

    /// Applies a config patch to a topic: the error code and message.
    async fn alter(
        &self,
        principal: &Principal,
        resource_type: i8,
        name: &str,
        patch: Result<Map<String, Value>, String>,
        validate_only: bool,
    ) -> (i16, Option<String>) {
        if resource_type != TOPIC_RESOURCE {
            return (
                errors::INVALID_REQUEST,
                Some("only topic configs can be changed; brokers have none".into()),
            );
        }
        let patch = match patch {
            Ok(p) => p,
            Err(message) => return (errors::INVALID_CONFIG, Some(message)),
        };
        let fail = |e: ServiceError| (errors::code(&e), Some(e.message));
        let topic = match TopicName::new(name.to_owned()).map_err(ServiceError::from) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        if let Err(e) = authorize(principal, Operation::Admin, topic.as_str()) {
            return fail(e);
        }
        if validate_only {
            return match self.state.controller.describe_topic(&topic).await {
                Ok(_) => (NONE, None),
                Err(e) => fail(e.into()),
            };
        }
        match self.state.controller.update_topic(topic, Some(Value::Object(patch)), None).await {
            Ok(_) => (NONE, None),
            Err(e) => fail(e.into()),
        }
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

/// Kafka's topic config names and Shale's.
const SHALE_KEYS: &[(&str, &str)] = &[
    ("retention.ms", "retention_ms"),
    ("retention.bytes", "retention_bytes"),
    ("cleanup.policy", "cleanup_policy"),
    ("delete.retention.ms", "delete_retention_ms"),
    ("shale.archive.after.ms", "archive_after_ms"),
];

/// IncrementalAlterConfigs' operations as a merge patch: SET sets, DELETE
/// returns the setting to its default; APPEND and SUBTRACT do not apply to
/// any of Shale's settings.
fn incremental_patch(
    configs: &[incremental_alter_configs_request::AlterableConfig],
) -> Result<Map<String, Value>, String> {
    let mut patch = Map::new();
    for c in configs {
        match c.config_operation {
            OP_SET => patch.extend(topic_config(std::iter::once((
                c.name.as_str(),
                c.value.as_ref().map(|v| v.as_str()),
            )))?),
            OP_DELETE => match SHALE_KEYS.iter().find(|(kafka, _)| *kafka == c.name.as_str()) {
                Some((_, key)) => {
                    patch.insert((*key).to_owned(), Value::Null);
                }
                None => return Err(format!("topic config {} is not supported", c.name.as_str())),
            },
            op => return Err(format!("config operation {op} does not apply to {}", c.name.as_str())),
        }
    }
    Ok(patch)
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
