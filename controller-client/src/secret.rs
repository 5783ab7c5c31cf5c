//! The cluster credential: a shared secret, read from a file, that every
//! controller route (Raft RPCs and the controller API) requires as
//! `Authorization: Bearer <secret>`. Gateways and compactors present it.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Shortest secret accepted (characters, after trimming whitespace).
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct ClusterSecret {
    secret: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the cluster secret file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the cluster secret must be at least {MIN_SECRET_LEN} visible ASCII characters")]
    Weak,
}

impl ClusterSecret {
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        let secret = secret.trim();
        if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::Weak);
        }
        Ok(Self { secret: secret.to_owned(), digest: Sha256::digest(secret.as_bytes()).into() })
    }

    /// Reads the secret from a file (surrounding whitespace is ignored).
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SecretError::Read { path: path.display().to_string(), source })?;
        Self::new(&text)
    }

    /// The `Authorization` header value to present.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    /// Whether an `Authorization` header value carries this secret. Digests
    /// are compared, so the time taken says nothing about the secret.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(presented) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest == self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_is_accepted() {
        let s = ClusterSecret::new(" 0123456789abcdef-cluster\n").expect("valid");
        assert!(s.accepts(Some(&s.header_value())));
        assert!(s.accepts(Some("Bearer 0123456789abcdef-cluster")));
        assert!(!s.accepts(Some("Bearer 0123456789abcdef-clusteR")));
        assert!(!s.accepts(Some("Basic 0123456789abcdef-cluster")));
        assert!(!s.accepts(None));
        assert!(!format!("{s:?}").contains("0123"), "never printed");
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(matches!(ClusterSecret::new("short"), Err(SecretError::Weak)));
        assert!(matches!(ClusterSecret::new("sixteen chars and a space"), Err(SecretError::Weak)));
    }
}
