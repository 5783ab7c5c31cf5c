//! The one table of error codes: each code's HTTP status and whether a client
//! may retry the request unchanged.

use serde::{Deserialize, Serialize};

/// A machine-readable error code, sent as `error_code` in every error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: bad JSON, bad query, bad field value.
    InvalidRequest,
    /// The body's content type is not one this endpoint accepts.
    InvalidContentType,
    /// A topic name breaks Kafka's rule.
    InvalidTopicName,
    /// An offset parameter is neither a number nor `earliest`/`latest`.
    InvalidOffset,
    /// A key or value is not valid in the requested encoding.
    InvalidEncoding,
    /// No token, or an unknown or revoked one (`WWW-Authenticate: Bearer`).
    Unauthenticated,
    /// The token's grants do not allow this operation on this topic. Also
    /// the answer for a topic the principal may not describe, whether or not
    /// it exists.
    Forbidden,
    /// No such route.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    TopicNotFound,
    PartitionNotFound,
    TopicExists,
    TokenNotFound,
    TokenExists,
    GroupNotFound,
    /// The member is not in the group (it left, or missed its session): join again.
    MemberNotFound,
    /// A commit from a stale member epoch, or for a partition the member
    /// does not own; nothing changed. Heartbeat for the current assignment.
    StaleMember,
    /// The operation needs a group without live members.
    GroupNotEmpty,
    /// The group's members use the other group protocol (Kafka's classic
    /// protocol, or Shale's server-side assignment): a group's kind is fixed
    /// by its first member.
    InconsistentGroupProtocol,
    /// A Kafka idempotent producer's batch skipped a sequence number (an
    /// earlier batch is missing); nothing was written. Send the missing one first.
    OutOfOrderSequence,
    /// A Kafka producer's epoch is older than one already seen: another
    /// instance with the same producer id took over.
    ProducerFenced,
    /// A single record exceeds the record size limit.
    RecordTooLarge,
    /// The request body exceeds the request size limit.
    RequestTooLarge,
    /// The asked offset is outside `[log_start_offset, high_watermark]`.
    OffsetOutOfRange,
    /// A conditional append's `expected_offset` is not the partition's next offset.
    OffsetMismatch,
    /// A stored record cannot be shown in the requested encoding.
    NotRepresentable,
    /// The request body did not arrive in time; nothing was written.
    RequestTimeout,
    /// The gateway's buffer is full; retry after the `Retry-After` delay.
    Overloaded,
    /// The object store failed after retries; nothing was committed.
    StorageUnavailable,
    /// The controller could not be reached or has no leader; nothing was committed.
    ControllerUnavailable,
    /// The commit may or may not have happened. Retrying may write twice.
    OutcomeUnknown,
    /// Stored data failed its checksum or could not be decoded.
    CorruptData,
    Internal,
}

impl ErrorCode {
    /// The table: HTTP status and retryability of every code.
    pub const fn spec(self) -> (u16, bool) {
        use ErrorCode::*;
        match self {
            InvalidRequest | InvalidContentType | InvalidTopicName | InvalidOffset | InvalidEncoding => {
                (400, false)
            }
            Unauthenticated => (401, false),
            Forbidden => (403, false),
            NotFound | TopicNotFound | PartitionNotFound | TokenNotFound | GroupNotFound | MemberNotFound => {
                (404, false)
            }
            MethodNotAllowed => (405, false),
            TopicExists
            | TokenExists
            | StaleMember
            | GroupNotEmpty
            | InconsistentGroupProtocol
            | OutOfOrderSequence
            | ProducerFenced => (409, false),
            RecordTooLarge | RequestTooLarge => (413, false),
            OffsetMismatch => (412, false),
            OffsetOutOfRange => (416, false),
            NotRepresentable => (422, false),
            RequestTimeout => (408, true),
            Overloaded => (429, true),
            Internal | CorruptData => (500, false),
            StorageUnavailable | ControllerUnavailable => (503, true),
            OutcomeUnknown => (504, false),
        }
    }

    pub const fn status(self) -> u16 {
        self.spec().0
    }

    pub const fn retryable(self) -> bool {
        self.spec().1
    }

    /// The wire name, as serialized in `error_code`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            InvalidContentType => "invalid_content_type",
            InvalidTopicName => "invalid_topic_name",
            InvalidOffset => "invalid_offset",
            InvalidEncoding => "invalid_encoding",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            TopicNotFound => "topic_not_found",
            PartitionNotFound => "partition_not_found",
            TopicExists => "topic_exists",
            TokenNotFound => "token_not_found",
            TokenExists => "token_exists",
            GroupNotFound => "group_not_found",
            MemberNotFound => "member_not_found",
            StaleMember => "stale_member",
            GroupNotEmpty => "group_not_empty",
            InconsistentGroupProtocol => "inconsistent_group_protocol",
            OutOfOrderSequence => "out_of_order_sequence",
            ProducerFenced => "producer_fenced",
            RecordTooLarge => "record_too_large",
            RequestTooLarge => "request_too_large",
            OffsetOutOfRange => "offset_out_of_range",
            OffsetMismatch => "offset_mismatch",
            NotRepresentable => "not_representable",
            RequestTimeout => "request_timeout",
            Overloaded => "overloaded",
            StorageUnavailable => "storage_unavailable",
            ControllerUnavailable => "controller_unavailable",
            OutcomeUnknown => "outcome_unknown",
            CorruptData => "corrupt_data",
            Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_name_matches_serde() {
        for code in [
            ErrorCode::InvalidTopicName,
            ErrorCode::OffsetOutOfRange,
            ErrorCode::OffsetMismatch,
            ErrorCode::OutcomeUnknown,
            ErrorCode::Overloaded,
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::TokenExists,
            ErrorCode::TokenNotFound,
            ErrorCode::RequestTimeout,
            ErrorCode::GroupNotFound,
            ErrorCode::MemberNotFound,
            ErrorCode::StaleMember,
            ErrorCode::GroupNotEmpty,
            ErrorCode::InconsistentGroupProtocol,
            ErrorCode::OutOfOrderSequence,
            ErrorCode::ProducerFenced,
        ] {
            let json = serde_json_like(code);
            assert_eq!(json, code.as_str());
        }
    }

    fn serde_json_like(code: ErrorCode) -> String {
        // serde's snake_case rename of the variant name
        let debug = format!("{code:?}");
        let mut out = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        assert!(ErrorCode::Overloaded.retryable());
        assert!(ErrorCode::StorageUnavailable.retryable());
        assert!(!ErrorCode::OutcomeUnknown.retryable());
        assert!(!ErrorCode::TopicExists.retryable());
        assert_eq!(ErrorCode::OffsetOutOfRange.status(), 416);
    }
}
