//! `shale-lambda`: Shale's gateway and compactor as AWS Lambda functions.
//!
//! The role comes from `_HANDLER` (the function's handler setting):
//! - `gateway` serves the same axum router as `shale gateway` through
//!   lambda_http (Function URL and API Gateway HTTP API events, payload 2.0);
//! - `compactor` runs one bounded compaction pass per event (an EventBridge
//!   schedule) within the invocation's remaining time.
//!
//! Settings are the servers' flags, read from their `SHALE_*` environment
//! names only (see `shale-flags`). The binary links no Raft server: only the
//! controller client.

mod compactor;
mod gateway;
mod secret;

use clap::Parser;
use tracing_subscriber::EnvFilter;

const DEFAULT_LOG_FILTER: &str =
    "warn,shale_lambda=info,shale_gateway=info,shale_compactor=info,shale_core=info";

fn init_logs() {
    let filter = EnvFilter::try_from_env("SHALE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Lambda stamps every line itself; CloudWatch shows no colours
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time();
    if std::env::var("SHALE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
}

/// Flags come from the environment only: the first argument is the name.
fn from_env<T: Parser>(role: &str) -> T {
    T::parse_from([format!("shale-lambda ({role})")])
}

fn main() -> anyhow::Result<()> {
    init_logs();
    let role = std::env::var("_HANDLER").unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(async {
        match role.as_str() {
            "gateway" => gateway::run(from_env(&role)).await,
            "compactor" => compactor::run(from_env(&role)).await,
            other => Err(anyhow::anyhow!("_HANDLER is {other:?}: set it to gateway or compactor")),
        }
    });
    if let Err(e) = &served {
        tracing::error!(error = format!("{e:#}"), role, "shale-lambda stopped");
    }
    served
}
