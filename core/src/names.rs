//! Names and ids: topics, partitions, offsets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A partition number within a topic, from 0.
pub type PartitionId = u32;
/// A record's position in its partition: dense, from 0.
pub type Offset = u64;

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic name that follows Kafka's rule: 1 to 249 characters of
/// `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic name {name:?}: {reason}")]
pub struct InvalidTopicName {
    pub name: String,
    pub reason: &'static str,
}

impl TopicName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidTopicName> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_TOPIC_NAME_LEN {
            Some("it is longer than 249 characters")
        } else if name == "." || name == ".." {
            Some("'.' and '..' are not allowed")
        } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidTopicName { name, reason }),
            None => Ok(Self(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = InvalidTopicName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TopicName> for String {
    fn from(value: TopicName) -> Self {
        value.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rule() {
        assert!(TopicName::new("orders").is_ok());
        assert!(TopicName::new("a.b_c-D9").is_ok());
        assert!(TopicName::new("x".repeat(249)).is_ok());
        assert!(TopicName::new("x".repeat(250)).is_err());
        assert!(TopicName::new("").is_err());
        assert!(TopicName::new(".").is_err());
        assert!(TopicName::new("..").is_err());
        assert!(TopicName::new("a/b").is_err());
        assert!(TopicName::new("a b").is_err());
        assert!(TopicName::new("é").is_err());
    }
}
