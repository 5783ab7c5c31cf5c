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

/// How log lines are written (Lambda sends stderr to CloudWatch).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log lines as text, or JSON for CloudWatch Logs Insights.
    #[arg(long, env = "SHALE_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

fn init_logs(args: &LogArgs) {
    let filter = EnvFilter::try_from_env("SHALE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Lambda stamps every line itself; CloudWatch shows no colours
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time();
    if args.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        logs.init();
    }
}

/// Lambda starts the binary without arguments, so the flags come from their
/// `SHALE_*` environment names; `_HANDLER=gateway shale-lambda --help` lists
/// them.
fn from_env<T: Parser>(role: &str) -> T {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(name) = args.first_mut() {
        *name = format!("shale-lambda ({role})");
    }
    T::parse_from(args)
}

fn main() -> anyhow::Result<()> {
    let role = std::env::var("_HANDLER").unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new()?;
    let served = runtime.block_on(async {
        match role.as_str() {
            "gateway" => {
                let args: gateway::GatewayLambdaArgs = from_env(&role);
                init_logs(&args.log);
                gateway::run(args).await
            }
            "compactor" => {
                let args: compactor::CompactorLambdaArgs = from_env(&role);
                init_logs(&args.log);
                compactor::run(args).await
            }
            other => {
                init_logs(&LogArgs { log_format: "text".into() });
                Err(anyhow::anyhow!("_HANDLER is {other:?}: set it to gateway or compactor"))
            }
        }
    });
    if let Err(e) = &served {
        tracing::error!(error = format!("{e:#}"), role, "shale-lambda stopped");
    }
    served
}
