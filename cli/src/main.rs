//! `shale`: one binary for the servers and the client commands.

mod args;
mod bench;
mod client;
mod dev;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "shale", version, about = "Shale: a Kafka-style log on object storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run controller and gateway in one process, data in a local directory.
    Dev(dev::DevArgs),
    /// Create, list, describe or delete topics.
    Topic(client::TopicArgs),
    /// Produce one record per line of standard input.
    Produce(client::ProduceArgs),
    /// Print records of one partition, one per line.
    Consume(client::ConsumeArgs),
    /// Measure throughput, latency and cost against the store's own ceiling.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SHALE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Topic(args) => client::topic(args).await,
            Command::Produce(args) => client::produce(args).await,
            Command::Consume(args) => client::consume(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}
