//! Metadata, FindCoordinator, InitProducerId, CreateTopics, DeleteTopics,
//! DescribeConfigs and the SASL/PLAIN exchange.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rand::Rng;
use serde_json::{Map, Value};
use shale_controller_client::TopicInfo;
use shale_controller_client::auth::{Operation, Principal};
use shale_core::TopicName;

use super::errors::{self, NONE};
use super::requests::{Handled, Response, error_response};
use super::{CLUSTER_ID, NODE_ID, Session};
use shale_gateway::service::{ServiceError, authorize};

/// Partitions of a topic created without a count (`num_partitions` -1).
const DEFAULT_PARTITIONS: u32 = 1;
/// DescribeConfigs resource type of a topic.
pub const TOPIC_RESOURCE: i8 = 2;

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The topic called `name`, if the principal may do `operation` on it.
fn permitted(principal: &Principal, name: &str, operation: Operation) -> Result<TopicName, ServiceError> {
    let topic = TopicName::new(name.to_owned())?;
    authorize(principal, operation, topic.as_str())?;
    Ok(topic)
}

impl Session {
    /// The topic, if the principal may describe it.
    async fn describe(&self, principal: &Principal, name: &str) -> Result<TopicInfo, ServiceError> {
        let topic = permitted(principal, name, Operation::Describe)?;
        Ok(self.state.controller.describe_topic(&topic).await?)
    }

    fn broker(&self) -> MetadataResponseBroker {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(text(self.config.host.clone()))
            .with_port(i32::from(self.config.port))
    }

    pub(super) async fn metadata(
        &self,
        principal: &Principal,
        request: MetadataRequest,
        version: i16,
    ) -> Response {
        // v0 asks for every topic with an empty list, later versions with null
        let names: Option<Vec<String>> = match request.topics {
            Some(t) if !(version == 0 && t.is_empty()) => {
                Some(t.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect())
            }
            _ => None,
        };
        let mut topics = Vec::new();
        match names {
            None => match self.state.controller.list_topics().await {
                Ok(all) => {
                    for info in all.iter().filter(|t| principal.allows(Operation::Describe, t.name.as_str()))
                    {
                        topics.push(topic_metadata(info));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "kafka metadata: listing topics failed"),
            },
            Some(names) => {
                for name in names {
                    let described = self.describe(principal, &name).await;
                    topics.push(match described {
                        Ok(info) => topic_metadata(&info),
                        Err(e) => MetadataResponseTopic::default()
                            .with_name(Some(kafka_protocol::messages::TopicName(text(name))))
                            .with_error_code(errors::code(&e)),
                    });
                }
            }
        }
        Response::Metadata(
            MetadataResponse::default()
                .with_brokers(vec![self.broker()])
                .with_cluster_id(Some(text(CLUSTER_ID)))
                .with_controller_id(BrokerId(NODE_ID))
                .with_topics(topics),
        )
    }

    pub(super) fn find_coordinator(&self, request: FindCoordinatorRequest, version: i16) -> Response {
        let (host, port) = (text(self.config.host.clone()), i32::from(self.config.port));
        let mut response = FindCoordinatorResponse::default();
        if version >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(NODE_ID))
                        .with_host(host.clone())
                        .with_port(port)
                })
                .collect();
            response = response.with_coordinators(coordinators);
        } else {
            response = response.with_node_id(BrokerId(NODE_ID)).with_host(host).with_port(port);
        }
        Response::FindCoordinator(response)
    }

    pub(super) async fn create_topics(
        &self,
        principal: &Principal,
        request: CreateTopicsRequest,
    ) -> Response {
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let name = topic.name.clone();
            let (code, message, partitions) =
                match self.create_topic(principal, &topic, request.validate_only).await {
                    Ok(p) => (NONE, None, p as i32),
                    Err((code, message)) => (code, Some(text(message)), -1),
                };
            results.push(
                CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            );
        }
        Response::CreateTopics(CreateTopicsResponse::default().with_topics(results))
    }

    async fn create_topic(
        &self,
        principal: &Principal,
        topic: &create_topics_request::CreatableTopic,
        validate_only: bool,
    ) -> Result<u32, (i16, String)> {
        let fail = |e: ServiceError| (errors::code(&e), e.message);
        let name = TopicName::new(topic.name.0.to_string()).map_err(|e| fail(e.into()))?;
        authorize(principal, Operation::Admin, name.as_str()).map_err(fail)?;
        let partitions = match topic.num_partitions {
            -1 => DEFAULT_PARTITIONS,
            n => u32::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or((errors::INVALID_PARTITIONS, format!("{n} partitions")))?,
        };
        if !topic.assignments.is_empty() {
            return Err((
                errors::INVALID_REQUEST,
                "replica assignments do not apply: the object store replicates".into(),
            ));
        }
        let config = topic_config(
            topic.configs.iter().map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
        )
        .map_err(|m| (errors::INVALID_CONFIG, m))?;
        let config = serde_json::from_value(Value::Object(config))
            .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))?;
        if validate_only {
            return Ok(partitions);
        }
        let created = self.state.clock.now_ms();
        let info = self
            .state
            .controller
            .create_topic(name, partitions, config, created)
            .await
            .map_err(|e| fail(e.into()))?;
        tracing::info!(topic = %info.name, partitions, "topic created over kafka");
        Ok(partitions)
    }

    pub(super) async fn delete_topics(
        &self,
        principal: &Principal,
        request: DeleteTopicsRequest,
    ) -> Response {
        let names: Vec<String> = request
            .topic_names
            .iter()
            .map(|n| n.0.to_string())
            .chain(request.topics.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())))
            .collect();
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let deleted = match permitted(principal, &name, Operation::Admin) {
                Ok(t) => self.state.controller.delete_topic(t).await.map_err(ServiceError::from),
                Err(e) => Err(e),
            };
            let (code, message) = match deleted {
                Ok(()) => (NONE, None),
                Err(e) => (errors::code(&e), Some(text(e.message))),
            };
            results.push(
                DeletableTopicResult::default()
                    .with_name(Some(kafka_protocol::messages::TopicName(text(name))))
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        Response::DeleteTopics(DeleteTopicsResponse::default().with_responses(results))
    }

    /// Topics' settings under Kafka's names; a broker has none to show.
    pub(super) async fn describe_configs(
        &self,
        principal: &Principal,
        request: DescribeConfigsRequest,
    ) -> Response {
        let mut results = Vec::with_capacity(request.resources.len());
        for resource in request.resources {
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if resource.resource_type == TOPIC_RESOURCE {
                let described = self.describe(principal, resource.resource_name.as_str()).await;
                match described {
                    Ok(info) => {
                        let wanted = resource.configuration_keys.as_ref();
                        let configs = kafka_configs(&info)
                            .into_iter()
                            .filter(|(name, _)| wanted.is_none_or(|w| w.iter().any(|k| k.as_str() == *name)))
                            .map(|(name, value)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(text(name))
                                    .with_value(Some(text(value)))
                                    .with_config_source(1)
                            })
                            .collect();
                        result = result.with_configs(configs);
                    }
                    Err(e) => {
                        result =
                            result.with_error_code(errors::code(&e)).with_error_message(Some(text(e.message)))
                    }
                }
            }
            results.push(result);
        }
        Response::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
    }

    pub(super) fn sasl_handshake(&mut self, request: &SaslHandshakeRequest) -> Handled {
        let plain = request.mechanism.as_str() == "PLAIN";
        self.sasl_ready = plain;
        let code = if plain { NONE } else { errors::UNSUPPORTED_SASL_MECHANISM };
        match error_response(ApiKey::SaslHandshake, code) {
            Some(r) => Handled::Answer(r),
            None => Handled::Close(super::requests::api_versions(code)),
        }
    }

    /// SASL/PLAIN: `authzid NUL username NUL password`, where the password
    /// is a Shale token (the username is only logged).
    pub(super) async fn sasl_authenticate(&mut self, request: &SaslAuthenticateRequest) -> Handled {
        let refuse = |code: i16, message: &str| {
            Handled::Close(Response::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(text(message))),
            ))
        };
        if !self.sasl_ready {
            return refuse(errors::ILLEGAL_SASL_STATE, "SaslHandshake with PLAIN must come first");
        }
        let mut parts = request.auth_bytes.split(|b| *b == 0);
        let (Some(_authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return refuse(errors::SASL_AUTHENTICATION_FAILED, "malformed PLAIN message");
        };
        let token = String::from_utf8_lossy(password);
        match self.state.auth.authenticate(Some(&format!("Bearer {token}"))).await {
            Ok(principal) => {
                tracing::debug!(peer = %self.peer, user = %String::from_utf8_lossy(user), principal = %principal.name, "kafka client authenticated");
                self.principal = Some(principal);
                self.token = Some(token.into_owned());
                Handled::Answer(Response::SaslAuthenticate(
                    SaslAuthenticateResponse::default().with_error_code(NONE),
                ))
            }
            Err(e) => refuse(errors::SASL_AUTHENTICATION_FAILED, &e.to_string()),
        }
    }
}

/// A new producer id: random, so gateways need not agree on them (two
/// producers share one with odds of about 2^-62 per pair). Transactions are
/// not supported.
pub fn init_producer_id(request: &InitProducerIdRequest) -> Response {
    if request.transactional_id.is_some() {
        return Response::InitProducerId(
            InitProducerIdResponse::default().with_error_code(errors::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        );
    }
    // a producer that asks to bump its epoch keeps its id
    let (id, epoch) = if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        (request.producer_id.0, request.producer_epoch.saturating_add(1))
    } else {
        (rand::rng().random_range(1..i64::MAX >> 1), 0)
    };
    Response::InitProducerId(
        InitProducerIdResponse::default()
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
    )
}

fn topic_metadata(info: &TopicInfo) -> MetadataResponseTopic {
    let partitions = info
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.partition as i32)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(kafka_protocol::messages::TopicName(text(info.name.to_string()))))
        .with_partitions(partitions)
}

/// Kafka topic configs as Shale's (a JSON object for the controller).
/// Replication settings are accepted and ignored (the store replicates);
/// other unknown names are refused.
pub fn topic_config<'a>(
    configs: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (name, value) in configs {
        let number = |v: Option<&str>| {
            v.and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| format!("{name} must be an integer, got {v:?}"))
        };
        match name {
            "retention.ms" | "retention.bytes" => {
                let n = number(value)?;
                let key = if name == "retention.ms" { "retention_ms" } else { "retention_bytes" };
                // Kafka's -1 is "no limit"
                out.insert(key.into(), if n < 0 { Value::Null } else { Value::from(n) });
            }
            "delete.retention.ms" => {
                out.insert("delete_retention_ms".into(), Value::from(number(value)?.max(0)));
            }
            "cleanup.policy" => {
                let v = value.unwrap_or("delete").replace(' ', "");
                out.insert("cleanup_policy".into(), Value::from(v));
            }
            "shale.archive.after.ms" => {
                out.insert("archive_after_ms".into(), Value::from(number(value)?.max(0)));
            }
            "min.insync.replicas" | "unclean.leader.election.enable" | "replication.factor" => {}
            other => return Err(format!("topic config {other} is not supported")),
        }
    }
    Ok(out)
}

/// A topic's settings under Kafka's names.
fn kafka_configs(info: &TopicInfo) -> Vec<(&'static str, String)> {
    let c = &info.config;
    let limit = |v: Option<u64>| v.map_or("-1".to_owned(), |v| v.to_string());
    vec![
        ("cleanup.policy", c.cleanup_policy.as_str().to_owned()),
        ("retention.ms", limit(c.retention_ms)),
        ("retention.bytes", limit(c.retention_bytes)),
        ("delete.retention.ms", c.delete_retention_ms.to_string()),
        ("shale.archive.after.ms", c.archive_after_ms.to_string()),
    ]
}
