//! `shale controller` (one node of a controller cluster), `shale gateway`
//! (a stateless gateway against a cluster) and `shale compactor`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::http::header::CONTENT_TYPE;
use clap::Args;
use prometheus_client::registry::Registry;
use shale_compactor::Compactor;
use shale_controller::api::controller_router;
use shale_controller::{ControllerNode, NodeConfig, PeerAccess};
use shale_controller_client::remote::ClientOptions;
use shale_controller_client::{Controller, RemoteController};
use shale_core::store::StoreMetrics;
use shale_core::{Clock, SystemClock};
use shale_gateway::auth::{AuthMode, bootstrap_admin, log_bootstrap};
use shale_gateway::counting::Counting;
use shale_gateway::metrics::ProcessGauges;
use shale_gateway::mirror::Mirror;
use shale_gateway::registry::register;
use shale_gateway::{AppState, GatewayMetrics, router, serve};

use crate::args::{
    AuthArgs, ClusterArgs, CompactorArgs, GatewayArgs, KafkaArgs, ServeArgs, StoreArgs, compactor_id,
    is_loopback,
};
use crate::dev::shutdown_signal;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// This node's id, as in --peers.
    #[arg(long, env = "SHALE_NODE_ID")]
    id: u64,
    /// Address for Raft RPCs and the controller API; must match this node's --peers entry.
    #[arg(long, env = "SHALE_LISTEN")]
    listen: String,
    /// Every node of the cluster: ID=HOST:PORT,ID=HOST:PORT,…
    #[arg(long, env = "SHALE_PEERS", value_delimiter = ',', required = true)]
    peers: Vec<String>,
    /// Where this node keeps its Raft log and snapshots.
    #[arg(long, env = "SHALE_DATA_DIR")]
    data_dir: PathBuf,
    /// Take a snapshot after this many log entries.
    #[arg(long, env = "SHALE_SNAPSHOT_EVERY", default_value_t = 1000)]
    snapshot_every: u64,
    /// The bucket (the gateways' --store): the leader copies snapshots there,
    /// and a node started with an empty --data-dir starts from the newest.
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Run outside loopback without a cluster secret (unsafe: anyone who
    /// reaches this node can change the cluster).
    #[arg(long, env = "SHALE_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    peers
        .iter()
        .map(|p| {
            let (id, addr) = p.split_once('=').with_context(|| format!("peer {p:?} is not ID=HOST:PORT"))?;
            Ok((id.trim().parse().with_context(|| format!("peer id in {p:?}"))?, addr.trim().to_owned()))
        })
        .collect()
}

pub async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let limits = args.serve.limits()?;
    let peers = parse_peers(&args.peers)?;
    if !peers.contains_key(&args.id) {
        bail!("--id {} is not among --peers", args.id);
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let secret = args.cluster.secret()?;
    if secret.is_none() && !is_loopback(addr) && !args.insecure_no_auth {
        bail!(
            "{addr} is not a loopback address: give --cluster-secret-file (or --insecure-no-auth to run unprotected)"
        );
    }
    if secret.is_none() {
        tracing::warn!(%addr, "no cluster secret: anyone who reaches this node can change the cluster");
    }
    let peers_access =
        PeerAccess { secret, tls: limits.tls.is_some(), ca_cert_pem: args.cluster.ca_cert_pem()? };
    let store = match &args.store.store {
        Some(url) => Some(args.store.open(url, StoreMetrics::default())?),
        None => {
            tracing::warn!("no --store: snapshots stay on this node's disk only");
            None
        }
    };
    let config = NodeConfig {
        snapshot_every: args.snapshot_every.max(1),
        store,
        peers: peers_access.clone(),
        ..NodeConfig::new(args.id, args.data_dir.clone())
    };
    let node = ControllerNode::start_cluster(config, peers).await.context("starting the controller node")?;
    tracing::info!(id = args.id, %addr, "controller started");
    println!("shale controller {} listening on {}://{addr}", args.id, limits.scheme());
    std::io::stdout().flush()?;
    serve(listener, controller_router(node.clone(), peers_access), &limits, shutdown_signal()).await?;
    node.shutdown().await;
    Ok(())
}

#[derive(Debug, Args)]
pub struct GatewayCmdArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SHALE_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    /// The controller nodes: URL,URL,…
    #[arg(long, env = "SHALE_CONTROLLERS", value_delimiter = ',', required = true)]
    controllers: Vec<String>,
    /// Ask the controller for every topic lookup and partition read instead
    /// of mirroring its metadata from its feed (to compare the two).
    #[arg(long, env = "SHALE_NO_METADATA_MIRROR")]
    no_metadata_mirror: bool,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

pub async fn gateway(args: GatewayCmdArgs) -> anyhow::Result<()> {
    let config = args.gateway.config()?;
    let limits = args.serve.limits()?;
    let Some(url) = args.store.store.clone() else {
        bail!("--store is required: the gateway writes segments there (file://DIR or s3://BUCKET/PREFIX)");
    };
    let metrics = Arc::new(GatewayMetrics::new());
    let store = args.store.open(&url, metrics.store.clone())?;
    let options = ClientOptions { secret: args.cluster.secret()?, ca_cert_pem: args.cluster.ca_cert_pem()? };
    let remote = Arc::new(RemoteController::new(args.controllers.clone(), &options)?);
    let controller: Arc<dyn Controller> = Arc::new(Counting::new(remote, metrics.clone()));
    // produce and fetch read topics and indexes from the mirror
    let reads: Arc<dyn Controller> =
        if args.no_metadata_mirror { controller.clone() } else { Mirror::start(controller.clone()) };
    let lease = config.lease;
    let (listener, addr, auth) = args.auth.bind(&args.listen).await?;
    match (&args.auth.admin_token_file, auth) {
        (Some(path), AuthMode::Tokens) => {
            log_bootstrap(&bootstrap_admin(controller.as_ref(), path, SystemClock.now_ms()).await, path)
        }
        (None, AuthMode::Tokens) => tracing::info!(
            "auth is on: tokens are the controllers'; give one gateway --admin-token-file for the first admin token"
        ),
        (_, AuthMode::Off) => {}
    }
    let state = AppState::new(config, reads, store, metrics, Arc::new(SystemClock), auth);
    let registration = register(controller, args.gateway.advertised_url(limits.scheme(), addr), lease);
    tracing::info!(%addr, controllers = ?args.controllers, "gateway started");
    println!("shale gateway listening on {}://{addr}", limits.scheme());
    std::io::stdout().flush()?;
    let closing = state.closing.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // streams tell their clients to reconnect, then end, before the drain
        closing.cancel();
    };
    let kafka = args.kafka.start(state.clone(), args.auth.insecure_no_auth, &limits).await?;
    serve(listener, router(state), &limits, shutdown).await?;
    if let Some(kafka) = kafka {
        // the listener drains as the HTTP server did, within the same timeout
        if let Err(e) = kafka.await {
            tracing::warn!(error = %e, "the kafka listener failed");
        }
    }
    registration.leave().await;
    Ok(())
}

#[derive(Debug, Args)]
pub struct CompactorCmdArgs {
    /// The controller nodes: URL,URL,…
    #[arg(long, env = "SHALE_CONTROLLERS", value_delimiter = ',', required = true)]
    controllers: Vec<String>,
    /// This compactor's name in the controller (default: a new one per start).
    #[arg(long, env = "SHALE_COMPACTOR_ID")]
    id: Option<String>,
    /// Run one pass, print its report as JSON, hand the leases back and exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: the compactor's
    /// counters, its store requests, and the process's memory and CPU.
    #[arg(long, env = "SHALE_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    compactor: CompactorArgs,
}

pub async fn compactor(args: CompactorCmdArgs) -> anyhow::Result<()> {
    let config = args.compactor.config(args.id.clone().unwrap_or_else(compactor_id))?;
    let Some(url) = args.store.store.clone() else {
        bail!("--store is required: the compactor reads segments and writes the archive there");
    };
    let mut registry = Registry::default();
    let store_metrics = StoreMetrics::register(&mut registry);
    let store = args.store.open(&url, store_metrics)?;
    let options = ClientOptions { secret: args.cluster.secret()?, ca_cert_pem: args.cluster.ca_cert_pem()? };
    let controller = Arc::new(RemoteController::new(args.controllers.clone(), &options)?);
    tracing::info!(id = %config.id, controllers = ?args.controllers, "compactor started");
    let compactor = Compactor::new(config, controller, store, Arc::new(SystemClock));
    if args.once {
        let report = compactor.run_once(std::time::Duration::from_secs(600)).await;
        compactor.leave().await;
        println!("{}", serde_json::to_string(&report?)?);
        return Ok(());
    }
    let id = compactor.config().id.clone();
    match &args.metrics_listen {
        Some(addr) => {
            compactor.metrics().register(&mut registry);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener to {addr}"))?;
            let url = format!("http://{}/metrics", listener.local_addr()?);
            tokio::spawn(serve_metrics(listener, ProcessMetrics::new(registry)));
            println!("shale compactor {id} serving {url} against {}", args.controllers.join(","));
        }
        None => println!("shale compactor {id} running against {}", args.controllers.join(",")),
    }
    std::io::stdout().flush()?;
    compactor.run(shutdown_signal()).await;
    Ok(())
}

/// A registry with the process's memory and CPU gauges beside what was
/// registered in it, read afresh at every scrape.
struct ProcessMetrics {
    registry: Registry,
    process: ProcessGauges,
}

impl ProcessMetrics {
    fn new(mut registry: Registry) -> Self {
        let process = ProcessGauges::default();
        process.register(registry.sub_registry_with_prefix("shale"));
        Self { registry, process }
    }

    fn render(&self) -> String {
        self.process.refresh();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

/// `GET /metrics` for a process that serves nothing else.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: ProcessMetrics) {
    let metrics = Arc::new(metrics);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}
