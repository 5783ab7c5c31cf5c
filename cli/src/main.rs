//! `shale`: one binary for the servers and the client commands.

mod args;
mod bench;
mod client;
mod cluster;
mod dev;
mod group;
mod store;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "shale", version, about = "Shale: a Kafka-style log on object storage")]
struct Cli {
    /// Log lines as text for people or JSON for log shippers (stderr).
    #[arg(long, global = true, env = "SHALE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Shale's own events at `info`, libraries (openraft's state dumps among
/// them) at `warn`. `SHALE_LOG` replaces it.
const DEFAULT_LOG_FILTER: &str =
    "warn,shale=info,shale_core=info,shale_controller=info,shale_gateway=info,shale_tests=info";

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SHALE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run controller, gateway and compactor in one process, data in a local directory.
    Dev(dev::DevArgs),
    /// Run one node of a controller cluster.
    Controller(cluster::ControllerArgs),
    /// Run a stateless gateway against a controller cluster.
    Gateway(cluster::GatewayCmdArgs),
    /// Run a compactor against a controller cluster: archive, merges, garbage collection.
    Compactor(cluster::CompactorCmdArgs),
    /// Create, list, describe or delete topics.
    Topic(client::TopicArgs),
    /// Produce one record per line of standard input.
    Produce(client::ProduceArgs),
    /// Print records of one partition, or with --group of every partition
    /// the group assigns, one per line.
    Consume(client::ConsumeArgs),
    /// List, describe (with lag), reset offsets of, or delete consumer groups.
    Group(group::GroupArgs),
    /// Create, list or revoke API tokens.
    Token(client::TokenArgs),
    /// Prepare a bucket: create it, abort incomplete uploads, check conditional writes.
    Store(store::StoreCmdArgs),
    /// Measure throughput, latency and cost against the store's own ceiling.
    Bench(bench::BenchArgs),
}

/// glibc's mmap threshold for a command, pinned so that glibc never moves it.
///
/// Processes that hold producers' bodies keep glibc's default, 128 KiB. Left
/// dynamic, glibc raises it whenever a large mmapped buffer (a 4 MiB segment)
/// is freed, after which request bodies are carved from heap arenas that
/// fragment and never shrink: under overload the gateway's peak RSS grew to
/// several times its buffer limit (measured in docs/BENCHMARKS.md).
///
/// A compactor on its own holds no bodies. Its large buffers (chunk GETs,
/// decompressed chunks, column chunks, upload parts) are then reused heap
/// memory instead of fresh mappings that fault, zero and unmap, which took
/// half its CPU (docs/BENCHMARKS.md, eighth session).
fn mmap_threshold(command: &Command) -> usize {
    match command {
        Command::Compactor(_) => 8 << 20,
        _ => 128 << 10,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_mmap_threshold(bytes: usize) {
    let Ok(threshold) = libc::c_int::try_from(bytes) else { return };
    // SAFETY: mallopt only changes allocator tuning; it is called once, before
    // any other thread exists, with a valid parameter and value.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
    if ok != 1 {
        eprintln!("warning: mallopt(M_MMAP_THRESHOLD) failed; memory use may exceed the buffer limit");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_mmap_threshold(_bytes: usize) {}

/// Raises the open-file limit to the hard limit: every connection is a file,
/// and the usual soft limit (1024) is below the connection cap.
fn raise_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
}

fn main() -> anyhow::Result<()> {
    // parsing starts no thread, so the threshold is still set before any exists
    let cli = Cli::parse();
    pin_mmap_threshold(mmap_threshold(&cli.command));
    raise_file_limit();
    init_logs(cli.log_format);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Controller(args) => cluster::controller(args).await,
            Command::Gateway(args) => cluster::gateway(args).await,
            Command::Compactor(args) => cluster::compactor(args).await,
            Command::Topic(args) => client::topic(args).await,
            Command::Produce(args) => client::produce(args).await,
            Command::Consume(args) => client::consume(args).await,
            Command::Token(args) => client::token(args).await,
            Command::Group(args) => group::run(args).await,
            Command::Store(args) => store::run(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_compactor_on_its_own_raises_the_mmap_threshold() {
        let threshold =
            |args: &[&str]| Cli::try_parse_from(args).map(|cli| mmap_threshold(&cli.command)).ok();
        let compactor =
            ["shale", "compactor", "--controllers", "http://127.0.0.1:7071", "--store", "memory://"];
        assert_eq!(threshold(&compactor), Some(8 << 20));
        assert_eq!(threshold(&["shale", "dev"]), Some(128 << 10));
        let gateway = ["shale", "gateway", "--controllers", "http://127.0.0.1:7071", "--store", "memory://"];
        assert_eq!(threshold(&gateway), Some(128 << 10));
    }
}
