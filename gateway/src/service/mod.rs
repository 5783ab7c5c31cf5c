//! The gateway's domain operations, shared by the HTTP API and the Kafka
//! listener: append, read from many partitions with a wait, offset
//! resolution, group membership and authorization. Each fails with a
//! [`ServiceError`] that carries Shale's [`ErrorCode`]; each protocol maps
//! it to its own answer (HTTP status and JSON body, Kafka error code).

pub mod append;
pub mod groups;
pub mod offsets;
pub mod read;

use serde_json::{Map, Value};
use shale_controller_client::auth::{Operation, Principal};
use shale_controller_client::{ControllerError, MetaError};
use shale_core::names::InvalidTopicName;
use shale_core::{ErrorCode, Offset};

use crate::batcher::ProduceError;
use crate::reader::ReadError;

/// A refused or failed domain operation.
#[derive(Debug)]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// Facts a client acts on, e.g. the high watermark of an offset out of range.
    pub details: Map<String, Value>,
    /// Overrides the table's retryability: an unknown outcome is safe to
    /// retry when the request carried an idempotency key.
    pub retryable: Option<bool>,
    /// Seconds a client should wait before trying again.
    pub retry_after_secs: Option<u64>,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Map::new(), retryable: None, retry_after_secs: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A numeric detail, e.g. `high_watermark`.
    pub fn offset(&self, key: &str) -> Option<Offset> {
        self.details.get(key).and_then(Value::as_u64)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Refuses an operation the principal's grants do not allow. Checked before
/// the topic is looked up, so a principal that may not describe a topic
/// cannot learn whether it exists.
pub fn authorize(principal: &Principal, operation: Operation, topic: &str) -> Result<(), ServiceError> {
    if principal.allows(operation, topic) {
        return Ok(());
    }
    let op =
        serde_json::to_value(operation).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    Err(ServiceError::new(ErrorCode::Forbidden, format!("{} may not {op} topic {topic}", principal.name)))
}

impl From<InvalidTopicName> for ServiceError {
    fn from(e: InvalidTopicName) -> Self {
        ServiceError::new(ErrorCode::InvalidTopicName, e.to_string())
    }
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> Self {
        if let MetaError::OffsetMismatch { expected, actual } = e {
            return ServiceError::new(ErrorCode::OffsetMismatch, e.to_string())
                .with("expected_offset", expected)
                .with("next_offset", actual);
        }
        let code = match &e {
            MetaError::OffsetMismatch { .. } | MetaError::Duplicate { .. } => ErrorCode::Internal,
            MetaError::TopicExists(_) => ErrorCode::TopicExists,
            MetaError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            MetaError::PartitionNotFound { .. } => ErrorCode::PartitionNotFound,
            MetaError::Invalid(_) => ErrorCode::InvalidRequest,
            MetaError::TokenExists(_) => ErrorCode::TokenExists,
            MetaError::TokenNotFound(_) => ErrorCode::TokenNotFound,
            MetaError::Fenced(_) => ErrorCode::Internal,
            MetaError::SegmentExpired(_) => ErrorCode::ControllerUnavailable,
            MetaError::GroupNotFound(_) => ErrorCode::GroupNotFound,
            MetaError::MemberNotFound { .. } => ErrorCode::MemberNotFound,
            MetaError::StaleMember(_) => ErrorCode::StaleMember,
            MetaError::GroupNotEmpty(_) => ErrorCode::GroupNotEmpty,
            MetaError::GroupKindMismatch(_) => ErrorCode::InconsistentGroupProtocol,
            MetaError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            MetaError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        };
        ServiceError::new(code, e.to_string())
    }
}

impl From<ControllerError> for ServiceError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Meta(m) => m.into(),
            ControllerError::Unavailable(m) => ServiceError::new(ErrorCode::ControllerUnavailable, m),
            e @ ControllerError::NotLeader { .. } => {
                ServiceError::new(ErrorCode::ControllerUnavailable, e.to_string())
            }
            ControllerError::OutcomeUnknown(m) => ServiceError::new(ErrorCode::OutcomeUnknown, m),
        }
    }
}

impl From<ProduceError> for ServiceError {
    fn from(e: ProduceError) -> Self {
        let message = e.to_string();
        match e {
            ProduceError::Overloaded { .. } => {
                let mut err = ServiceError::new(ErrorCode::Overloaded, message);
                err.retry_after_secs = Some(1);
                err
            }
            ProduceError::Storage(_) => ServiceError::new(ErrorCode::StorageUnavailable, message),
            ProduceError::Controller(c) => c.into(),
            ProduceError::Refused(m) => m.into(),
            ProduceError::Encode(_) | ProduceError::Stopped => {
                ServiceError::new(ErrorCode::Internal, message)
            }
        }
    }
}

impl From<ReadError> for ServiceError {
    fn from(e: ReadError) -> Self {
        let message = e.to_string();
        match e {
            ReadError::OutOfRange { log_start_offset, high_watermark, .. } => {
                ServiceError::new(ErrorCode::OffsetOutOfRange, message)
                    .with("log_start_offset", log_start_offset)
                    .with("high_watermark", high_watermark)
            }
            ReadError::Controller(c) => c.into(),
            ReadError::Storage(_) | ReadError::Gone(_) => {
                ServiceError::new(ErrorCode::StorageUnavailable, message)
            }
            ReadError::Corrupt { .. } => ServiceError::new(ErrorCode::CorruptData, message),
        }
    }
}
