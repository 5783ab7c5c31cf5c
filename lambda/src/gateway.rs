//! The gateway on Lambda: the same router as `shale gateway`, through
//! lambda_http. What differs, and why:
//! - a produce is answered only after its segment is committed (as
//!   everywhere), and Lambda runs one invocation at a time, so when an
//!   invocation returns no data of it is left unflushed; the flush interval
//!   defaults to 0 (a batch per request) since nothing else could join it;
//! - it registers for no partition leadership (a frozen function cannot
//!   heartbeat), and it mirrors no metadata (a frozen long-poll goes stale):
//!   it asks the controllers;
//! - event streams are refused (Lambda buffers an answer whole); long-polls
//!   work.

use std::sync::Arc;

use anyhow::bail;
use clap::Parser;
use shale_controller_client::Controller;
use shale_core::{Clock, SystemClock};
use shale_flags::{AuthArgs, ClusterArgs, GatewayArgs, StoreArgs};
use shale_gateway::auth::{AuthMode, bootstrap_admin, log_bootstrap};
use shale_gateway::counting::Counting;
use shale_gateway::{AppState, GatewayMetrics, router};

use crate::secret::{SecretArgs, controllers};

#[derive(Debug, Parser)]
pub struct GatewayLambdaArgs {
    /// The controller nodes: URL,URL,…
    #[arg(long, env = "SHALE_CONTROLLERS", value_delimiter = ',', required = true)]
    controllers: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    pub log: crate::LogArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

pub async fn run(args: GatewayLambdaArgs) -> anyhow::Result<()> {
    let mut flags = args.gateway.clone();
    if std::env::var_os("SHALE_FLUSH_INTERVAL_MS").is_none() {
        flags.flush_interval_ms = 0;
    }
    let mut config = flags.config()?;
    config.max_streams = 0;
    let Some(url) = args.store.store.clone() else {
        bail!("SHALE_STORE is required: the gateway writes segments there (s3://BUCKET/PREFIX)");
    };
    let metrics = Arc::new(GatewayMetrics::new());
    let store = args.store.open(&url, metrics.store.clone())?;
    let remote = Arc::new(controllers(&args.controllers, &args.cluster, &args.secret).await?);
    let controller: Arc<dyn Controller> = Arc::new(Counting::new(remote, metrics.clone()));
    // no listener to judge by: tokens unless explicitly waived
    let auth = if args.auth.insecure_no_auth {
        tracing::warn!(
            "authentication is off (SHALE_INSECURE_NO_AUTH): anyone who reaches the function may use it"
        );
        AuthMode::Off
    } else {
        AuthMode::Tokens
    };
    if let (Some(path), AuthMode::Tokens) = (&args.auth.admin_token_file, auth) {
        log_bootstrap(&bootstrap_admin(controller.as_ref(), path, SystemClock.now_ms()).await, path);
    }
    let state = AppState::new(config, controller, store, metrics, Arc::new(SystemClock), auth);
    tracing::info!(controllers = ?args.controllers, "gateway function ready");
    lambda_http::run(router(state)).await.map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}
