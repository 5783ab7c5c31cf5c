//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: topics'
//! settings under Kafka's names, and the broker's, each with its source,
//! its default (as a synonym) and whether it can be changed.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{Map, Value};
use shale_controller_client::TopicInfo;
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::classic::INITIAL_REBALANCE_DELAY_MS;
use shale_controller_client::group::{MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS};
use shale_controller_client::meta::TopicConfig;
use shale_core::TopicName;
use shale_gateway::service::{ServiceError, authorize};

use super::errors::{self, NONE};
use super::groups::text;
use super::requests::Response;
use super::{FRAME_SLACK, NODE_ID, Session};

/// DescribeConfigs' resource types.
pub const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;

/// Kafka topic configs accepted and ignored, as they name what the object
/// store or Shale's segments take care of (replication, log segments,
/// flushing, the cleaner's pacing) or a limit the gateway's flags set
/// (`max.message.bytes`). Kafka Streams and Connect set several when they
/// create their internal topics.
const IGNORED: &[&str] = &[
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "replication.factor",
    "segment.bytes",
    "segment.ms",
    "segment.jitter.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "flush.messages",
    "flush.ms",
    "file.delete.delay.ms",
    "preallocate",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "message.downconversion.enable",
    "message.timestamp.type",
    "compression.type",
    "max.message.bytes",
];

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Where a value comes from, as Kafka's `ConfigSource` numbers them.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// Kafka's `ConfigType`.
const BOOLEAN: i8 = 1;
const STRING: i8 = 2;
const INT: i8 = 3;
const LONG: i8 = 5;
const LIST: i8 = 7;

/// One config as DescribeConfigs shows it.
struct Entry {
    name: &'static str,
    value: String,
    /// The value when nothing is set; named by `synonym` at the broker.
    default: String,
    synonym: &'static str,
    /// Fixed by Shale's design (one copy in the store, no broker log).
    read_only: bool,
    kind: i8,
    doc: &'static str,
}

impl Entry {
    fn new(
        name: &'static str,
        value: impl ToString,
        default: impl ToString,
        kind: i8,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            value: value.to_string(),
            default: default.to_string(),
            synonym: name,
            read_only: false,
            kind,
            doc,
        }
    }

    fn fixed(name: &'static str, value: impl ToString, kind: i8, doc: &'static str) -> Self {
        let value = value.to_string();
        Self { name, default: value.clone(), value, synonym: name, read_only: true, kind, doc }
    }

    fn synonym(mut self, broker_name: &'static str) -> Self {
        self.synonym = broker_name;
        self
    }
}

/// Which parts of an entry the request asks for.
#[derive(Clone, Copy)]
struct Asked {
    synonyms: bool,
    documentation: bool,
}

/// A limit that Kafka writes -1 for when there is none.
fn limit(v: Option<u64>) -> String {
    v.map_or("-1".to_owned(), |v| v.to_string())
}

/// A topic's settings: Shale's own, which can be changed, and the ones its
/// design fixes.
fn topic_entries(info: &TopicInfo, max_record_bytes: usize) -> Vec<Entry> {
    let (c, d) = (&info.config, TopicConfig::default());
    vec![
        Entry::new(
            "cleanup.policy",
            c.cleanup_policy.as_str(),
            d.cleanup_policy.as_str(),
            LIST,
            "delete, compact or compact,delete",
        )
        .synonym("log.cleanup.policy"),
        Entry::new(
            "retention.ms",
            limit(c.retention_ms),
            limit(d.retention_ms),
            LONG,
            "delete data older than this; -1 keeps it forever",
        )
        .synonym("log.retention.ms"),
        Entry::new(
            "retention.bytes",
            limit(c.retention_bytes),
            limit(d.retention_bytes),
            LONG,
            "delete the oldest data beyond this many bytes per partition",
        )
        .synonym("log.retention.bytes"),
        Entry::new(
            "delete.retention.ms",
            c.delete_retention_ms,
            d.delete_retention_ms,
            LONG,
            "how long a compacted topic keeps tombstones",
        )
        .synonym("log.cleaner.delete.retention.ms"),
        Entry::new(
            "shale.archive.after.ms",
            c.archive_after_ms,
            d.archive_after_ms,
            LONG,
            "records older than this move into the topic's Parquet archive",
        ),
        Entry::fixed(
            "max.message.bytes",
            max_record_bytes,
            INT,
            "the largest record a gateway takes (--max-record-bytes)",
        )
        .synonym("message.max.bytes"),
        Entry::fixed("message.timestamp.type", "CreateTime", STRING, "records keep the producer's timestamp")
            .synonym("log.message.timestamp.type"),
        Entry::fixed(
            "compression.type",
            "producer",
            STRING,
            "batches are decoded and stored in Shale's segments",
        ),
        Entry::fixed("min.insync.replicas", 1, INT, "the object store replicates"),
        Entry::fixed(
            "unclean.leader.election.enable",
            false,
            BOOLEAN,
            "every gateway leads every partition from the store",
        ),
    ]
}

impl Session {
    /// The broker's settings: every gateway answers as broker 0, from its flags.
    fn broker_entries(&self) -> Vec<Entry> {
        let (gateway, limits) = (&self.state.config, &self.config.limits);
        vec![
            Entry::fixed("broker.id", NODE_ID, INT, "every gateway answers as broker 0"),
            Entry::fixed(
                "auto.create.topics.enable",
                self.config.auto_create_topics,
                BOOLEAN,
                "--kafka-auto-create-topics",
            ),
            Entry::fixed("num.partitions", self.config.default_partitions, INT, "--kafka-default-partitions"),
            Entry::fixed("default.replication.factor", 1, INT, "the object store replicates"),
            Entry::fixed("offsets.topic.replication.factor", 1, INT, "group offsets live in the controller"),
            Entry::fixed(
                "transaction.state.log.replication.factor",
                1,
                INT,
                "transactions are not supported",
            ),
            Entry::fixed("min.insync.replicas", 1, INT, "the object store replicates"),
            Entry::fixed("message.max.bytes", gateway.max_record_bytes, INT, "--max-record-bytes"),
            Entry::fixed(
                "socket.request.max.bytes",
                gateway.max_request_bytes + FRAME_SLACK,
                INT,
                "--max-request-bytes plus framing",
            ),
            Entry::fixed("log.retention.ms", -1, LONG, "topics keep data until their retention.ms"),
            Entry::fixed("log.cleanup.policy", "delete", LIST, "the default cleanup.policy"),
            Entry::fixed(
                "log.message.timestamp.type",
                "CreateTime",
                STRING,
                "records keep the producer's timestamp",
            ),
            Entry::fixed(
                "group.initial.rebalance.delay.ms",
                INITIAL_REBALANCE_DELAY_MS,
                INT,
                "a new classic group waits this long for more members",
            ),
            Entry::fixed(
                "group.min.session.timeout.ms",
                MIN_SESSION_TIMEOUT_MS,
                INT,
                "shortest session a member may ask for",
            ),
            Entry::fixed(
                "group.max.session.timeout.ms",
                MAX_SESSION_TIMEOUT_MS,
                INT,
                "longest session a member may ask for",
            ),
            Entry::fixed(
                "connections.max.idle.ms",
                limits.idle_timeout.as_millis(),
                LONG,
                "--idle-timeout-ms",
            ),
            Entry::fixed("max.connections", limits.max_connections, INT, "--max-connections"),
        ]
    }

    /// Topics' and the broker's settings under Kafka's names.
    pub(super) async fn describe_configs(
        &self,
        principal: &Principal,
        request: DescribeConfigsRequest,
    ) -> Response {
        let asked =
            Asked { synonyms: request.include_synonyms, documentation: request.include_documentation };
        let mut results = Vec::with_capacity(request.resources.len());
        for resource in request.resources {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let name = resource.resource_name.as_str();
            let entries = match resource.resource_type {
                TOPIC_RESOURCE => match self.describe(principal, name).await {
                    Ok(info) => {
                        Ok((topic_entries(&info, self.state.config.max_record_bytes), DYNAMIC_TOPIC_CONFIG))
                    }
                    Err(e) => Err((errors::code(&e), e.message)),
                },
                BROKER_RESOURCE if name.is_empty() || name == NODE_ID.to_string() => {
                    Ok((self.broker_entries(), STATIC_BROKER_CONFIG))
                }
                BROKER_RESOURCE => {
                    Err((errors::INVALID_REQUEST, format!("no broker {name}: every gateway is broker 0")))
                }
                other => Err((errors::INVALID_REQUEST, format!("resource type {other} has no configs here"))),
            };
            let result = match entries {
                Ok((entries, set_source)) => {
                    let wanted = resource.configuration_keys.as_ref();
                    let configs = entries
                        .into_iter()
                        .filter(|e| wanted.is_none_or(|w| w.iter().any(|k| k.as_str() == e.name)))
                        .map(|e| described(e, set_source, asked))
                        .collect();
                    result.with_error_code(NONE).with_configs(configs)
                }
                Err((code, message)) => result.with_error_code(code).with_error_message(Some(text(message))),
            };
            results.push(result);
        }
        Response::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
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
}

/// One entry of a DescribeConfigs answer: a value that differs from its
/// default comes from `set_source` (the topic's own setting), and its
/// synonyms end with the default.
fn described(e: Entry, set_source: i8, asked: Asked) -> DescribeConfigsResourceResult {
    let source = match (set_source, e.read_only) {
        // the broker's, and what the design fixes: from the gateway's flags
        (STATIC_BROKER_CONFIG, _) | (_, true) => STATIC_BROKER_CONFIG,
        _ if e.value == e.default => DEFAULT_CONFIG,
        _ => set_source,
    };
    let mut synonyms = Vec::new();
    if asked.synonyms {
        if source != DEFAULT_CONFIG {
            synonyms.push(
                DescribeConfigsSynonym::default()
                    .with_name(text(e.name))
                    .with_value(Some(text(e.value.clone())))
                    .with_source(source),
            );
        }
        synonyms.push(
            DescribeConfigsSynonym::default()
                .with_name(text(e.synonym))
                .with_value(Some(text(e.default.clone())))
                .with_source(DEFAULT_CONFIG),
        );
    }
    DescribeConfigsResourceResult::default()
        .with_name(text(e.name))
        .with_value(Some(text(e.value)))
        .with_read_only(e.read_only)
        .with_config_source(source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(e.kind)
        .with_documentation(asked.documentation.then(|| text(e.doc)))
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
            "message.timestamp.type" if value.is_some_and(|v| v != "CreateTime") => {
                return Err(format!("message.timestamp.type is CreateTime on Shale, not {value:?}"));
            }
            name if IGNORED.contains(&name) => {}
            other => return Err(format!("topic config {other} is not supported")),
        }
    }
    Ok(out)
}
