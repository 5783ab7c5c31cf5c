//! Authentication of the public API: `Authorization: Bearer <token>` is
//! hashed and looked up among the controller's tokens, which this gateway
//! caches and refreshes every [`REFRESH_EVERY`] (and at once, at most every
//! [`MIN_REFRESH_GAP`], when a token is not known yet, so a token created on
//! another gateway works at once). A revoked token stops working here within
//! [`REFRESH_EVERY`]; on the gateway that revoked it, at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shale_controller_client::Controller;
use shale_controller_client::auth::{Principal, TokenRecord, token_hash};

/// How often the token cache is refreshed from the controller.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// An unknown token triggers a refresh at most this often.
pub const MIN_REFRESH_GAP: Duration = Duration::from_millis(200);

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Everyone is an admin (only allowed on loopback listeners, or with
    /// `--insecure-no-auth`).
    Off,
    Tokens,
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization: Bearer <token>")]
    Missing,
    #[error("unknown or revoked token")]
    Unknown,
}

pub struct Authenticator {
    mode: AuthMode,
    controller: Arc<dyn Controller>,
    /// Principals by token hash.
    known: RwLock<HashMap<String, Arc<Principal>>>,
    last_refresh: Mutex<Option<Instant>>,
    /// Everyone, when auth is off.
    anonymous: Arc<Principal>,
}

impl Authenticator {
    pub fn new(mode: AuthMode, controller: Arc<dyn Controller>) -> Arc<Self> {
        Arc::new(Self {
            mode,
            controller,
            known: RwLock::default(),
            last_refresh: Mutex::new(None),
            anonymous: Arc::new(Principal::anonymous()),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Keeps the cache fresh while the gateway runs.
    pub fn spawn_refresher(self: &Arc<Self>) {
        if self.mode == AuthMode::Off {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(auth) = me.upgrade() else { return };
                auth.refresh().await;
                drop(auth);
                tokio::time::sleep(REFRESH_EVERY).await;
            }
        });
    }

    /// The principal behind an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        if self.mode == AuthMode::Off {
            return Ok(self.anonymous.clone());
        }
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let hash = token_hash(token);
        if let Some(p) = self.lookup(&hash) {
            return Ok(p);
        }
        if self.may_refresh() {
            self.refresh().await;
        }
        self.lookup(&hash).ok_or(AuthError::Unknown)
    }

    fn lookup(&self, hash: &str) -> Option<Arc<Principal>> {
        self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(hash).cloned()
    }

    fn may_refresh(&self) -> bool {
        let mut last = self.last_refresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < MIN_REFRESH_GAP) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Reloads every token from the controller; keeps the old set when the
    /// controller cannot be reached.
    pub async fn refresh(&self) {
        match self.controller.list_tokens().await {
            Ok(tokens) => self.replace(&tokens),
            Err(e) => tracing::warn!(error = %e, "cannot refresh tokens from the controller"),
        }
    }

    /// Forgets a revoked token at once.
    pub fn forget(&self, name: &str) {
        self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, p| p.name != name);
    }

    fn replace(&self, tokens: &[TokenRecord]) {
        let map = tokens
            .iter()
            .map(|t| (t.hash.clone(), Arc::new(Principal { name: t.name.clone(), grants: t.grants.clone() })))
            .collect();
        *self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }
}

/// A new token: `shale_` and 256 random bits, base64url.
pub fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!("shale_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The name of the token made at first start.
pub const ADMIN_TOKEN_NAME: &str = "admin";

/// What [`bootstrap_admin`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Wrote a new admin token to the file.
    Created,
    /// The file is there already.
    Present,
    /// Another start made the admin token first (or the file was deleted):
    /// nothing written.
    ExistsElsewhere,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Controller(#[from] shale_controller_client::ControllerError),
}

/// On first start with auth on: creates the `admin` token (admin on `*`)
/// and writes it to `path` with mode 0600. The token is never logged.
pub async fn bootstrap_admin(
    controller: &dyn Controller,
    path: &std::path::Path,
    now_ms: i64,
) -> Result<Bootstrap, BootstrapError> {
    use shale_controller_client::auth::{Grant, Operation};
    use shale_controller_client::{ControllerError, MetaError};
    if path.exists() {
        return Ok(Bootstrap::Present);
    }
    let token = new_token();
    let record = TokenRecord {
        name: ADMIN_TOKEN_NAME.into(),
        hash: token_hash(&token),
        grants: vec![Grant::new(Operation::Admin, "*")],
        created_ms: now_ms,
    };
    match controller.create_token(record).await {
        Ok(_) => {}
        Err(ControllerError::Meta(MetaError::TokenExists(_))) => return Ok(Bootstrap::ExistsElsewhere),
        Err(e) => return Err(e.into()),
    }
    write_private(path, &token)
        .map_err(|source| BootstrapError::Write { path: path.display().to_string(), source })?;
    Ok(Bootstrap::Created)
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Logs what [`bootstrap_admin`] did (the path, never the token).
pub fn log_bootstrap(outcome: &Result<Bootstrap, BootstrapError>, path: &std::path::Path) {
    let path = path.display();
    match outcome {
        Ok(Bootstrap::Created) => tracing::info!(%path, "wrote the admin token (mode 0600)"),
        Ok(Bootstrap::Present) => tracing::info!(%path, "admin token file present"),
        Ok(Bootstrap::ExistsElsewhere) => tracing::warn!(
            %path,
            "an admin token exists but this file does not: use the token you have, or revoke `admin` and restart"
        ),
        Err(e) => tracing::error!(error = %e, "cannot create the admin token"),
    }
}
