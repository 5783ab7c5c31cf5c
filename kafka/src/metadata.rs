//! Metadata, FindCoordinator, InitProducerId, CreateTopics, DeleteTopics,
//! DescribeConfigs and the SASL/PLAIN exchange.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use rand::Rng;
use serde_json::Value;
use shale_controller_client::TopicInfo;
use shale_controller_client::auth::{Operation, Principal};
use shale_core::{ErrorCode, TopicName};

use super::configs::topic_config;
use super::errors::{self, NONE};
use super::groups::text;
use super::requests::{Handled, Response, error_response};
use super::{CLUSTER_ID, NODE_ID, Session};
use shale_gateway::service::{ServiceError, authorize};

/// The topic called `name`, if the principal may do `operation` on it.
fn permitted(principal: &Principal, name: &str, operation: Operation) -> Result<TopicName, ServiceError> {
    let topic = TopicName::new(name.to_owned())?;
    authorize(principal, operation, topic.as_str())?;
    Ok(topic)
}

impl Session {
    /// The topic, if the principal may describe it.
    pub(crate) async fn describe(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<TopicInfo, ServiceError> {
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
        // v0 asks for every topic with an empty list, later versions with null;
        // since v10 a topic may be asked for by its id (KIP-848 members do)
        let (names, ids): (Option<Vec<String>>, Vec<uuid::Uuid>) = match request.topics {
            Some(t) if !(version == 0 && t.is_empty()) => {
                let ids = t.iter().filter(|t| t.name.is_none()).map(|t| t.topic_id).collect();
                (Some(t.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect()), ids)
            }
            _ => (None, Vec::new()),
        };
        let mut topics = Vec::new();
        if !ids.is_empty() {
            topics.extend(self.topics_by_id(principal, &ids).await);
        }
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
                let create = self.config.auto_create_topics && request.allow_auto_topic_creation;
                for name in names {
                    let described = match self.describe(principal, &name).await {
                        Err(e) if create && e.code == ErrorCode::TopicNotFound => {
                            self.create_on_first_use(principal, &name).await
                        }
                        described => described,
                    };
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

    /// The topics asked for by id; an id no topic the principal may see has
    /// answers `UNKNOWN_TOPIC_ID`.
    async fn topics_by_id(&self, principal: &Principal, ids: &[uuid::Uuid]) -> Vec<MetadataResponseTopic> {
        let all = self.state.controller.list_topics().await.unwrap_or_default();
        ids.iter()
            .map(|id| {
                let found = all.iter().find(|t| {
                    super::consumer::topic_uuid(t) == *id
                        && principal.allows(Operation::Describe, t.name.as_str())
                });
                match found {
                    Some(info) => topic_metadata(info),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(*id)
                        .with_error_code(errors::UNKNOWN_TOPIC_ID),
                }
            })
            .collect()
    }

    /// Creates a topic a Metadata request names (`--kafka-auto-create-topics`),
    /// with the default partition count, if the principal may create it.
    async fn create_on_first_use(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<TopicInfo, ServiceError> {
        let topic = permitted(principal, name, Operation::Admin)?;
        let (partitions, now) = (self.config.default_partitions, self.state.clock.now_ms());
        let created =
            self.state.controller.create_topic(topic.clone(), partitions, Default::default(), now).await;
        match created.map_err(ServiceError::from) {
            Ok(info) => {
                tracing::info!(%topic, partitions, "topic created on first use over kafka");
                Ok(info)
            }
            // another client created it meanwhile
            Err(e) if e.code == ErrorCode::TopicExists => {
                Ok(self.state.controller.describe_topic(&topic).await?)
            }
            Err(e) => Err(e),
        }
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
            -1 => self.config.default_partitions,
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
        .with_topic_id(super::consumer::topic_uuid(info))
        .with_partitions(partitions)
}
