//! `shale dev`: controller, gateway and compactor in one process on a local directory.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use shale_compactor::Compactor;
use shale_controller::{ControllerNode, NodeConfig};
use shale_core::{Clock, SystemClock};
use shale_gateway::auth::{AuthMode, bootstrap_admin, log_bootstrap};
use shale_gateway::registry::register;
use shale_gateway::{AppState, GatewayMetrics, router, serve};

use crate::args::{AuthArgs, CompactorArgs, GatewayArgs, KafkaArgs, ServeArgs, StoreArgs, compactor_id};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where controller state and (by default) objects live.
    #[arg(long, env = "SHALE_DATA_DIR", default_value = "./shale-data")]
    data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SHALE_LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    compactor: CompactorArgs,
    /// Run without the compactor: no archive, merges or garbage collection.
    #[arg(long, env = "SHALE_NO_COMPACTOR")]
    no_compactor: bool,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let config = args.gateway.config()?;
    let limits = args.serve.limits()?;
    let compactor_config = args.compactor.config(compactor_id())?;
    let (listener, addr, auth) = args.auth.bind(&args.listen).await?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::path::absolute(&args.data_dir)?;
    let metrics = Arc::new(GatewayMetrics::new());
    let default_store = format!("file://{}", data_dir.join("objects").display());
    let store = args.store.open(&default_store, metrics.store.clone())?;
    let node_config =
        NodeConfig { store: Some(store.clone()), ..NodeConfig::new(1, data_dir.join("controller")) };
    let controller = ControllerNode::start_single(node_config).await.context("starting the controller")?;
    metrics.register(|registry| {
        controller.timings().register(registry.sub_registry_with_prefix("shale"));
        let index = shale_controller::metrics::IndexEntries(controller.clone());
        registry.sub_registry_with_prefix("shale_controller").register_collector(Box::new(index));
    });
    let lease = config.lease;
    if auth == AuthMode::Tokens {
        let path = args.auth.admin_token_file.clone().unwrap_or_else(|| data_dir.join("admin.token"));
        log_bootstrap(&bootstrap_admin(&controller, &path, SystemClock.now_ms()).await, &path);
    }
    // in process, so no mirror: every call is a read of the applied state
    let counted =
        Arc::new(shale_gateway::counting::Counting::new(Arc::new(controller.clone()), metrics.clone()));
    let state = AppState::new(config, counted, store.clone(), metrics.clone(), Arc::new(SystemClock), auth);
    let registration =
        register(Arc::new(controller.clone()), args.gateway.advertised_url(limits.scheme(), addr), lease);
    let (stop_compactor, compactor) = if args.no_compactor {
        tracing::info!("no compactor: nothing is archived, merged or collected");
        (None, None)
    } else {
        let compactor = Compactor::new(
            compactor_config,
            Arc::new(controller.clone()),
            store.clone(),
            Arc::new(SystemClock),
        );
        metrics.register(|registry| compactor.metrics().register(registry));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move { compactor.run(async { stopped.await.unwrap_or(()) }).await });
        (Some(stop), Some(task))
    };
    tracing::info!(%addr, store = %store, data_dir = %data_dir.display(), "shale dev started");
    println!("shale dev listening on {}://{addr}", limits.scheme());
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
    if let (Some(stop), Some(task)) = (stop_compactor, compactor) {
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "the compactor task failed");
        }
    }
    controller.shutdown().await;
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
