//! The compactor on Lambda: each event (an EventBridge schedule, or any
//! invocation) runs one bounded pass within the invocation's remaining time,
//! then hands every lease back, so a frozen function holds no partition.
//! A pass that would outlast the invocation is cut short: an archive file
//! being written is then never swapped in, and garbage collection removes it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use shale_compactor::Compactor;
use shale_core::store::StoreMetrics;
use shale_core::{Clock, SystemClock};
use shale_flags::{ClusterArgs, CompactorArgs, StoreArgs};

use crate::secret::{SecretArgs, controllers};

#[derive(Debug, Parser)]
pub struct CompactorLambdaArgs {
    /// The controller nodes: URL,URL,…
    #[arg(long, env = "SHALE_CONTROLLERS", value_delimiter = ',', required = true)]
    controllers: Vec<String>,
    /// This compactor's name in the controller (default: lambda-FUNCTION_NAME).
    #[arg(long, env = "SHALE_COMPACTOR_ID")]
    id: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    pub log: crate::LogArgs,
    #[command(flatten)]
    compactor: CompactorArgs,
}

/// Time kept back from the pass for handing the leases back and answering.
const MIN_RESERVE: Duration = Duration::from_millis(1500);

pub async fn run(args: CompactorLambdaArgs) -> anyhow::Result<()> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "compactor".into());
    let config = args.compactor.config(args.id.clone().unwrap_or_else(|| format!("lambda-{function}")))?;
    let Some(url) = args.store.store.clone() else {
        bail!("SHALE_STORE is required: the compactor reads segments and writes the archive there");
    };
    let metrics = StoreMetrics::default();
    let store = args.store.open(&url, metrics.clone())?;
    let controller = Arc::new(controllers(&args.controllers, &args.cluster, &args.secret).await?);
    let compactor = Arc::new(Compactor::new(config, controller, store, Arc::new(SystemClock)));
    tracing::info!(id = %compactor.config().id, "compactor function ready");
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let (compactor, metrics) = (compactor.clone(), metrics.clone());
        async move { pass(&compactor, &metrics, event).await }
    });
    lambda_runtime::run(handler).await.map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}

/// Time left before the invocation's deadline (ms since the epoch).
fn remaining(deadline_ms: u64) -> Duration {
    let now = SystemClock.now_ms().max(0) as u64;
    Duration::from_millis(deadline_ms.saturating_sub(now))
}

/// One pass; the answer carries its report and the store requests this
/// sandbox has made so far (what the function's IAM policy must allow).
async fn pass(
    compactor: &Compactor,
    metrics: &StoreMetrics,
    event: LambdaEvent<Value>,
) -> Result<Value, lambda_runtime::Error> {
    let left = remaining(event.context.deadline);
    let reserve = (left / 3).max(MIN_RESERVE);
    let budget = left.saturating_sub(reserve);
    let source = event.payload.get("detail-type").and_then(Value::as_str).unwrap_or("invocation").to_owned();
    tracing::info!(%source, budget_ms = budget.as_millis() as u64, "compaction pass");
    // the budget stops new partitions; the hard stop also ends a file being
    // written once the reserve is down to what answering needs
    let hard_stop = left.saturating_sub(MIN_RESERVE / 2);
    let outcome = tokio::time::timeout(hard_stop, compactor.run_once(budget)).await;
    let released = compactor.leave().await;
    let requests = metrics.requests_by_op();
    match outcome {
        Ok(Ok(report)) => {
            Ok(json!({"report": report, "leases_released": released, "store_requests_since_start": requests}))
        }
        Ok(Err(e)) => Err(format!("compaction pass failed: {e}").into()),
        Err(_) => Ok(json!({
            "report": {"out_of_time": true},
            "cut_short": true,
            "leases_released": released,
            "store_requests_since_start": requests,
        })),
    }
}
