//! Kafka's error codes, and the one table from Shale's errors to them.

use shale_controller_client::classic::ClassicError;
use shale_core::ErrorCode;

use shale_gateway::service::ServiceError;

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const LEADER_NOT_AVAILABLE: i16 = 5;
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const STALE_MEMBER_EPOCH: i16 = 113;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const MEMBER_ID_REQUIRED: i16 = 79;

/// The Kafka error code for a Shale error.
pub fn code(e: &ServiceError) -> i16 {
    match e.code {
        ErrorCode::InvalidRequest | ErrorCode::InvalidContentType | ErrorCode::InvalidEncoding => {
            INVALID_REQUEST
        }
        ErrorCode::InvalidTopicName => INVALID_TOPIC_EXCEPTION,
        ErrorCode::InvalidOffset | ErrorCode::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
        ErrorCode::Unauthenticated => SASL_AUTHENTICATION_FAILED,
        ErrorCode::Forbidden => TOPIC_AUTHORIZATION_FAILED,
        ErrorCode::NotFound | ErrorCode::TopicNotFound | ErrorCode::PartitionNotFound => {
            UNKNOWN_TOPIC_OR_PARTITION
        }
        ErrorCode::TopicExists => TOPIC_ALREADY_EXISTS,
        ErrorCode::GroupNotFound => GROUP_ID_NOT_FOUND,
        ErrorCode::MemberNotFound => UNKNOWN_MEMBER_ID,
        ErrorCode::StaleMember => ILLEGAL_GENERATION,
        ErrorCode::GroupNotEmpty => NON_EMPTY_GROUP,
        ErrorCode::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
        ErrorCode::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        ErrorCode::ProducerFenced => INVALID_PRODUCER_EPOCH,
        ErrorCode::RecordTooLarge | ErrorCode::RequestTooLarge => MESSAGE_TOO_LARGE,
        // retryable: the client tries again, safely with an idempotent producer
        ErrorCode::RequestTimeout | ErrorCode::Overloaded | ErrorCode::OutcomeUnknown => REQUEST_TIMED_OUT,
        ErrorCode::StorageUnavailable => KAFKA_STORAGE_ERROR,
        ErrorCode::ControllerUnavailable => LEADER_NOT_AVAILABLE,
        ErrorCode::CorruptData => CORRUPT_MESSAGE,
        ErrorCode::OffsetMismatch
        | ErrorCode::NotRepresentable
        | ErrorCode::MethodNotAllowed
        | ErrorCode::TokenNotFound
        | ErrorCode::TokenExists
        | ErrorCode::Internal => UNKNOWN_SERVER_ERROR,
    }
}

/// [`code`] for group requests: a refusal names the group, and an
/// unavailable controller is an unavailable coordinator.
pub fn group_code(e: &ServiceError) -> i16 {
    match e.code {
        ErrorCode::Forbidden => GROUP_AUTHORIZATION_FAILED,
        ErrorCode::ControllerUnavailable | ErrorCode::RequestTimeout | ErrorCode::OutcomeUnknown => {
            COORDINATOR_NOT_AVAILABLE
        }
        _ => code(e),
    }
}

/// The Kafka error code for a refusal of the classic group protocol.
pub fn classic_code(e: ClassicError) -> i16 {
    match e {
        ClassicError::UnknownMemberId => UNKNOWN_MEMBER_ID,
        ClassicError::IllegalGeneration => ILLEGAL_GENERATION,
        ClassicError::RebalanceInProgress => REBALANCE_IN_PROGRESS,
        ClassicError::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
        ClassicError::FencedInstanceId => FENCED_INSTANCE_ID,
        ClassicError::InvalidSessionTimeout => INVALID_SESSION_TIMEOUT,
        ClassicError::GroupMaxSizeReached => GROUP_MAX_SIZE_REACHED,
        ClassicError::InvalidRequest => INVALID_REQUEST,
    }
}
