//! Which APIs the listener serves, at which versions, and the dispatch of a
//! decoded request to its handler.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::protocol::StrBytes;

use shale_gateway::batcher::BufferPermit;

use super::errors::{INVALID_REQUEST, UNSUPPORTED_VERSION};
use super::{Session, Turn};

pub use kafka_protocol::messages::RequestKind as Request;
pub use kafka_protocol::messages::ResponseKind as Response;

/// The APIs served and their version ranges: the ones current clients
/// (librdkafka 2.x, the Java client 3.x, kafka-python, kafkajs) use, up to
/// the versions that name topics rather than topic ids.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

pub fn supports(api_key: ApiKey, version: i16) -> bool {
    SUPPORTED.iter().any(|(k, min, max)| *k == api_key && (*min..=*max).contains(&version))
}

/// What a request frame (after its length) holds, decoded without I/O.
pub enum Decoded {
    /// A key that names no API: the connection closes.
    UnknownApi(i16),
    /// An API or version not served: answered with the table.
    Unsupported {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    },
    /// A header that cannot be read: the connection closes.
    BadHeader(String),
    /// A body that cannot be read: answered with INVALID_REQUEST.
    Malformed {
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
        error: String,
    },
    Request {
        api_key: ApiKey,
        version: i16,
        header: Box<RequestHeader>,
        request: Box<Request>,
    },
}

/// Decodes a request frame. Never panics, whatever the bytes: the fuzz
/// target (`fuzz/fuzz_targets/kafka_request.rs`) and a bounded test hold it to that.
pub fn decode_frame(mut frame: Bytes) -> Decoded {
    if frame.len() < 8 {
        return Decoded::BadHeader(format!("a frame of {} bytes", frame.len()));
    }
    let (key, version) = (frame.slice(0..2).get_i16(), frame.slice(2..4).get_i16());
    let correlation_id = frame.slice(4..8).get_i32();
    let Ok(api_key) = ApiKey::try_from(key) else { return Decoded::UnknownApi(key) };
    if !supports(api_key, version) {
        return Decoded::Unsupported { api_key, version, correlation_id };
    }
    let header = match RequestHeader::decode(&mut frame, api_key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return Decoded::BadHeader(e.to_string()),
    };
    match Request::decode(api_key, &mut frame, version) {
        Ok(request) => {
            Decoded::Request { api_key, version, header: Box::new(header), request: Box::new(request) }
        }
        Err(e) => Decoded::Malformed { api_key, version, correlation_id, error: e.to_string() },
    }
}

/// What a handler decided.
pub enum Handled {
    Answer(Response),
    /// No answer at all: a produce with acks=0.
    Silent,
    /// Answer, then close the connection.
    Close(Response),
}

/// The ApiVersions answer listing [`SUPPORTED`].
pub fn api_versions(error_code: i16) -> Response {
    let keys = SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            api_versions_response::ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    Response::ApiVersions(ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(keys))
}

/// The answer to an API or version not served, and the version to encode
/// it at (None: none can be, so the connection closes). ApiVersions is
/// answered at v0 with the list, as Kafka does, so the client can retry
/// at a version both sides know.
pub fn unsupported(api_key: ApiKey, version: i16) -> (Response, Option<i16>) {
    if api_key == ApiKey::ApiVersions {
        return (api_versions(UNSUPPORTED_VERSION), Some(0));
    }
    let range = api_key.valid_versions();
    let at = (range.min..=range.max).contains(&version).then_some(version);
    match error_response(api_key, UNSUPPORTED_VERSION) {
        Some(r) => (r, at),
        None => (Response::ApiVersions(ApiVersionsResponse::default()), None),
    }
}

/// The answer to a request that could not be decoded.
pub fn invalid(api_key: ApiKey) -> Response {
    error_response(api_key, INVALID_REQUEST).unwrap_or_else(|| api_versions(INVALID_REQUEST))
}

/// An answer carrying `code` for the APIs whose answers have a place for
/// one (or an empty answer, whose missing entries tell the client the
/// request did nothing); None for the rest.
pub fn error_response(api_key: ApiKey, code: i16) -> Option<Response> {
    Some(match api_key {
        ApiKey::ApiVersions => api_versions(code),
        ApiKey::Produce => Response::Produce(ProduceResponse::default()),
        ApiKey::Fetch => Response::Fetch(FetchResponse::default().with_error_code(code)),
        ApiKey::ListOffsets => Response::ListOffsets(ListOffsetsResponse::default()),
        ApiKey::Metadata => Response::Metadata(MetadataResponse::default()),
        ApiKey::OffsetCommit => Response::OffsetCommit(OffsetCommitResponse::default()),
        ApiKey::OffsetFetch => Response::OffsetFetch(OffsetFetchResponse::default().with_error_code(code)),
        ApiKey::FindCoordinator => {
            Response::FindCoordinator(FindCoordinatorResponse::default().with_error_code(code))
        }
        ApiKey::JoinGroup => Response::JoinGroup(JoinGroupResponse::default().with_error_code(code)),
        ApiKey::Heartbeat => Response::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        ApiKey::LeaveGroup => Response::LeaveGroup(LeaveGroupResponse::default().with_error_code(code)),
        ApiKey::SyncGroup => Response::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        ApiKey::DescribeGroups => Response::DescribeGroups(DescribeGroupsResponse::default()),
        ApiKey::ListGroups => Response::ListGroups(ListGroupsResponse::default().with_error_code(code)),
        ApiKey::SaslHandshake => Response::SaslHandshake(
            SaslHandshakeResponse::default()
                .with_error_code(code)
                .with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]),
        ),
        ApiKey::SaslAuthenticate => {
            Response::SaslAuthenticate(SaslAuthenticateResponse::default().with_error_code(code))
        }
        ApiKey::CreateTopics => Response::CreateTopics(CreateTopicsResponse::default()),
        ApiKey::DeleteTopics => Response::DeleteTopics(DeleteTopicsResponse::default()),
        ApiKey::DeleteRecords => Response::DeleteRecords(DeleteRecordsResponse::default()),
        ApiKey::InitProducerId => {
            Response::InitProducerId(InitProducerIdResponse::default().with_error_code(code))
        }
        ApiKey::DescribeConfigs => Response::DescribeConfigs(DescribeConfigsResponse::default()),
        ApiKey::AlterConfigs => Response::AlterConfigs(AlterConfigsResponse::default()),
        ApiKey::IncrementalAlterConfigs => {
            Response::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default())
        }
        ApiKey::CreatePartitions => Response::CreatePartitions(CreatePartitionsResponse::default()),
        ApiKey::DeleteGroups => Response::DeleteGroups(DeleteGroupsResponse::default()),
        ApiKey::OffsetDelete => Response::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code)),
        ApiKey::DescribeCluster => {
            Response::DescribeCluster(DescribeClusterResponse::default().with_error_code(code))
        }
        ApiKey::DescribeAcls => Response::DescribeAcls(DescribeAclsResponse::default().with_error_code(code)),
        ApiKey::AddPartitionsToTxn => {
            Response::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_error_code(code))
        }
        ApiKey::AddOffsetsToTxn => {
            Response::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        ApiKey::EndTxn => Response::EndTxn(EndTxnResponse::default().with_error_code(code)),
        ApiKey::OffsetForLeaderEpoch => {
            Response::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default())
        }
        ApiKey::ConsumerGroupHeartbeat => {
            Response::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::default().with_error_code(code))
        }
        ApiKey::ConsumerGroupDescribe => {
            Response::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default())
        }
        ApiKey::GetTelemetrySubscriptions => Response::GetTelemetrySubscriptions(
            GetTelemetrySubscriptionsResponse::default().with_error_code(code),
        ),
        _ => return None,
    })
}

impl Session {
    /// Runs one decoded request. Before authentication only ApiVersions and
    /// the SASL exchange are served.
    pub(super) async fn dispatch(
        &mut self,
        header: &RequestHeader,
        request: Request,
        version: i16,
        room: BufferPermit,
        turn: Option<Turn>,
    ) -> Handled {
        if let Some(token) = &self.token {
            // a token revoked since the connection authenticated ends it
            let authorization = format!("Bearer {token}");
            self.principal = self.state.auth.authenticate(Some(&authorization)).await.ok();
        }
        let Some(principal) = self.principal.clone() else {
            return match request {
                Request::ApiVersions(_) => Handled::Answer(api_versions(0)),
                Request::SaslHandshake(r) => self.sasl_handshake(&r),
                Request::SaslAuthenticate(r) => self.sasl_authenticate(&r).await,
                // a producer learns per partition why its batch was refused
                Request::Produce(r) => {
                    let code = super::errors::SASL_AUTHENTICATION_FAILED;
                    Handled::Close(Response::Produce(super::records::produce_error(&r, code)))
                }
                other => {
                    let key = api_key_of(&other);
                    tracing::debug!(peer = %self.peer, ?key, "kafka request before SASL authentication: closing");
                    let code = super::errors::SASL_AUTHENTICATION_FAILED;
                    match key.and_then(|k| error_response(k, code)) {
                        Some(r) => Handled::Close(r),
                        None => Handled::Close(api_versions(code)),
                    }
                }
            };
        };
        let client = header.client_id.as_ref().map_or("", |c| c.as_str());
        match request {
            Request::ApiVersions(_) => Handled::Answer(api_versions(0)),
            Request::SaslHandshake(r) => self.sasl_handshake(&r),
            Request::SaslAuthenticate(r) => self.sasl_authenticate(&r).await,
            Request::Metadata(r) => Handled::Answer(self.metadata(&principal, r, version).await),
            Request::Produce(r) => self.produce(&principal, r, room, turn).await,
            Request::Fetch(r) => Handled::Answer(self.fetch(&principal, r).await),
            Request::ListOffsets(r) => Handled::Answer(self.list_offsets(&principal, r).await),
            Request::FindCoordinator(r) => Handled::Answer(self.find_coordinator(r, version)),
            Request::InitProducerId(r) => Handled::Answer(super::metadata::init_producer_id(&r)),
            Request::CreateTopics(r) => Handled::Answer(self.create_topics(&principal, r).await),
            Request::DeleteTopics(r) => Handled::Answer(self.delete_topics(&principal, r).await),
            Request::DescribeConfigs(r) => Handled::Answer(self.describe_configs(&principal, r).await),
            Request::JoinGroup(r) => Handled::Answer(self.join_group(&principal, r, version, client).await),
            Request::SyncGroup(r) => Handled::Answer(self.sync_group(r).await),
            Request::Heartbeat(r) => Handled::Answer(self.heartbeat(r).await),
            Request::LeaveGroup(r) => Handled::Answer(self.leave_group(r, version).await),
            Request::OffsetCommit(r) => Handled::Answer(self.offset_commit(&principal, r).await),
            Request::OffsetFetch(r) => Handled::Answer(self.offset_fetch(&principal, r).await),
            Request::ListGroups(r) => Handled::Answer(self.list_groups(&principal, r).await),
            Request::DescribeGroups(r) => Handled::Answer(self.describe_groups(&principal, r).await),
            Request::DeleteGroups(r) => Handled::Answer(self.delete_groups(&principal, r).await),
            Request::CreatePartitions(r) => Handled::Answer(self.create_partitions(&principal, r).await),
            Request::AlterConfigs(r) => Handled::Answer(self.alter_configs(&principal, r).await),
            Request::IncrementalAlterConfigs(r) => {
                Handled::Answer(self.incremental_alter_configs(&principal, r).await)
            }
            Request::DescribeCluster(_) => Handled::Answer(self.describe_cluster()),
            Request::DeleteRecords(r) => Handled::Answer(self.delete_records(&principal, r).await),
            Request::OffsetForLeaderEpoch(r) => {
                Handled::Answer(self.offset_for_leader_epoch(&principal, r).await)
            }
            Request::OffsetDelete(r) => Handled::Answer(self.offset_delete(&principal, r).await),
            Request::ConsumerGroupHeartbeat(r) => {
                Handled::Answer(self.consumer_group_heartbeat(&principal, r).await)
            }
            Request::ConsumerGroupDescribe(r) => {
                Handled::Answer(self.consumer_group_describe(&principal, r).await)
            }
            other => {
                // supports() let it through, so this is a table mistake
                let key = api_key_of(&other);
                tracing::warn!(?key, "kafka API in the table without a handler");
                match key.and_then(|k| error_response(k, UNSUPPORTED_VERSION)) {
                    Some(r) => Handled::Answer(r),
                    None => Handled::Close(api_versions(UNSUPPORTED_VERSION)),
                }
            }
        }
    }
}

/// The API of a decoded request, for the few answers built without its
/// handler.
fn api_key_of(request: &Request) -> Option<ApiKey> {
    Some(match request {
        Request::Produce(_) => ApiKey::Produce,
        Request::Fetch(_) => ApiKey::Fetch,
        Request::ListOffsets(_) => ApiKey::ListOffsets,
        Request::Metadata(_) => ApiKey::Metadata,
        Request::OffsetCommit(_) => ApiKey::OffsetCommit,
        Request::OffsetFetch(_) => ApiKey::OffsetFetch,
        Request::FindCoordinator(_) => ApiKey::FindCoordinator,
        Request::JoinGroup(_) => ApiKey::JoinGroup,
        Request::Heartbeat(_) => ApiKey::Heartbeat,
        Request::LeaveGroup(_) => ApiKey::LeaveGroup,
        Request::SyncGroup(_) => ApiKey::SyncGroup,
        Request::CreateTopics(_) => ApiKey::CreateTopics,
        Request::DeleteTopics(_) => ApiKey::DeleteTopics,
        Request::InitProducerId(_) => ApiKey::InitProducerId,
        Request::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        Request::DescribeGroups(_) => ApiKey::DescribeGroups,
        Request::ListGroups(_) => ApiKey::ListGroups,
        Request::DeleteGroups(_) => ApiKey::DeleteGroups,
        Request::CreatePartitions(_) => ApiKey::CreatePartitions,
        Request::AlterConfigs(_) => ApiKey::AlterConfigs,
        Request::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        Request::DescribeCluster(_) => ApiKey::DescribeCluster,
        Request::DeleteRecords(_) => ApiKey::DeleteRecords,
        Request::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        Request::OffsetDelete(_) => ApiKey::OffsetDelete,
        Request::ConsumerGroupHeartbeat(_) => ApiKey::ConsumerGroupHeartbeat,
        Request::ConsumerGroupDescribe(_) => ApiKey::ConsumerGroupDescribe,
        _ => return None,
    })
}
