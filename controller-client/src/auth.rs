//! Who may do what on the public API: tokens belong to named principals with
//! grants; a grant is an operation on a topic name or a name prefix. The
//! controller stores only each token's SHA-256; the token itself is shown
//! once, when it is created.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Write records.
    Produce,
    /// Read records and offsets.
    Consume,
    /// See that a topic exists, its partitions and offsets.
    Describe,
    /// Everything on the topics it names; on `*`, tokens and groups too.
    Admin,
}

/// An operation on a topic name (`orders`), a prefix (`orders*`) or all (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub operation: Operation,
    /// A topic name, a prefix ending in `*`, or `*`.
    #[schema(pattern = r"^([a-zA-Z0-9._-]{1,249}|[a-zA-Z0-9._-]{0,248}\*)$")]
    pub topic: String,
}

/// Longest token or topic pattern name.
const MAX_NAME: usize = 249;

fn valid_name_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Grant {
    pub fn new(operation: Operation, topic: &str) -> Self {
        Self { operation, topic: topic.to_owned() }
    }

    /// Checks the pattern: a topic name, optionally ending in `*`.
    pub fn validate(&self) -> Result<(), String> {
        let stem = self.topic.strip_suffix('*').unwrap_or(&self.topic);
        let ok = self.topic.len() <= MAX_NAME
            && valid_name_chars(stem)
            && (self.topic.ends_with('*') || !stem.is_empty());
        if ok {
            Ok(())
        } else {
            Err(format!("grant topic {:?} must be a topic name, a prefix ending in *, or *", self.topic))
        }
    }

    /// Whether this grant's pattern covers `topic`.
    pub fn covers(&self, topic: &str) -> bool {
        match self.topic.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => self.topic == topic,
        }
    }

    /// Whether this grant allows `operation` on `topic`. `admin` allows
    /// everything it covers; `produce` and `consume` imply `describe`.
    pub fn allows(&self, operation: Operation, topic: &str) -> bool {
        let implied = match self.operation {
            Operation::Admin => true,
            Operation::Produce | Operation::Consume => {
                operation == self.operation || operation == Operation::Describe
            }
            Operation::Describe => operation == Operation::Describe,
        };
        implied && self.covers(topic)
    }
}

/// A token as listed: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub grants: Vec<Grant>,
    pub created_ms: i64,
}

/// A token as the controller stores it and gateways verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub grants: Vec<Grant>,
    pub created_ms: i64,
}

impl TokenRecord {
    pub fn info(&self) -> TokenInfo {
        TokenInfo { name: self.name.clone(), grants: self.grants.clone(), created_ms: self.created_ms }
    }
}

/// Checks a token's name (as topic names: `[a-zA-Z0-9._-]`, 1 to 249).
pub fn validate_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME || !valid_name_chars(name) {
        return Err(format!("token name {name:?} must be 1 to {MAX_NAME} characters of [a-zA-Z0-9._-]"));
    }
    Ok(())
}

/// The hex SHA-256 of a token: what the controller stores. Tokens are 256
/// random bits, so a fast hash is enough (nothing to brute-force).
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A principal's grants, checked per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// Everyone, when authentication is off.
    pub fn anonymous() -> Self {
        Self { name: "anonymous".into(), grants: vec![Grant::new(Operation::Admin, "*")] }
    }

    pub fn allows(&self, operation: Operation, topic: &str) -> bool {
        self.grants.iter().any(|g| g.allows(operation, topic))
    }

    /// Admin on `*`: tokens, groups and every topic.
    pub fn is_cluster_admin(&self) -> bool {
        self.grants.iter().any(|g| g.operation == Operation::Admin && g.topic == "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_names_and_prefixes() {
        let exact = Grant::new(Operation::Produce, "orders");
        assert!(exact.covers("orders") && !exact.covers("orders2"));
        let prefix = Grant::new(Operation::Consume, "orders*");
        assert!(prefix.covers("orders") && prefix.covers("orders.eu") && !prefix.covers("order"));
        assert!(Grant::new(Operation::Describe, "*").covers("anything"));
        for bad in ["", "a b", "or*ders", "orders**", "ü"] {
            assert!(Grant::new(Operation::Admin, bad).validate().is_err(), "{bad:?}");
        }
        for good in ["*", "orders*", "a.b-c_d"] {
            assert!(Grant::new(Operation::Admin, good).validate().is_ok(), "{good:?}");
        }
    }

    #[test]
    fn operations_imply_as_documented() {
        let producer =
            Principal { name: "p".into(), grants: vec![Grant::new(Operation::Produce, "orders*")] };
        assert!(producer.allows(Operation::Produce, "orders"));
        assert!(producer.allows(Operation::Describe, "orders"));
        assert!(!producer.allows(Operation::Consume, "orders"));
        assert!(!producer.allows(Operation::Admin, "orders"));
        assert!(!producer.allows(Operation::Produce, "payments"));
        let describer = Principal { name: "d".into(), grants: vec![Grant::new(Operation::Describe, "*")] };
        assert!(!describer.allows(Operation::Consume, "x"));
        let admin = Principal { name: "a".into(), grants: vec![Grant::new(Operation::Admin, "team-a*")] };
        assert!(admin.allows(Operation::Consume, "team-a.x") && !admin.is_cluster_admin());
        assert!(Principal::anonymous().is_cluster_admin());
    }

    #[test]
    fn hashes_are_hex_sha256() {
        let h = token_hash("abc");
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
