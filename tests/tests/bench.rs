//! `shale bench` runs and reports what it measured. Speed is not asserted
//! here (benchmarks are programs); that the figures exist and make sense is.

use std::process::Stdio;

use anyhow::ensure;
use serde_json::Value;
use shale_tests::process::binary;
use tokio::process::Command;

async fn bench(args: &[&str], json: &std::path::Path) -> anyhow::Result<Value> {
    let out = Command::new(binary())
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .await?;
    ensure!(out.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(json)?)?;
    Ok(report["results"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_workloads_report_their_figures() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("report.json");

    let store = bench(&["store", "--duration-secs=1", "--object-mib=1"], &file).await?;
    ensure!(
        store["put throughput"].as_f64() > Some(0.0) && store["get throughput"].as_f64() > Some(0.0),
        "{store}"
    );

    let small =
        ["--duration-secs=1", "--partitions=4", "--producers=4", "--batch=16", "--flush-interval-ms=10"];
    let produce = bench(&[&["produce"][..], &small[..]].concat(), &file).await?;
    ensure!(produce["acked records/s"].as_f64() > Some(0.0), "{produce}");
    ensure!(produce["store PUTs"].as_f64() > Some(0.0) && produce["failed requests"] == 0.0, "{produce}");
    ensure!(produce["ack latency p99"].as_f64() >= produce["ack latency p50"].as_f64(), "{produce}");
    ensure!(produce["gateway peak RSS"].as_f64() > Some(1.0), "{produce}");
    // with auth on, every request carries the admin token and none is refused
    let authed = bench(&[&["produce", "--auth"][..], &small[..]].concat(), &file).await?;
    ensure!(authed["acked records/s"].as_f64() > Some(0.0) && authed["failed requests"] == 0.0, "{authed}");
    let config: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    ensure!(config["config"]["auth"] == true, "the report says auth was on: {}", config["config"]);

    let e2e = bench(&[&["e2e", "--rate-mib=1"][..], &small[..]].concat(), &file).await?;
    ensure!(
        e2e["delivered records"].as_f64() > Some(0.0) && e2e["end-to-end latency p50"].as_f64() > Some(0.0),
        "{e2e}"
    );

    let log = dir.path().join("server.log");
    let log_arg = format!("--server-log={}", log.display());
    let catchup = bench(&[&["catchup", "--backlog-mib=2", &log_arg][..], &small[..]].concat(), &file).await?;
    ensure!(catchup["backlog"].as_f64() >= Some(2.0) && catchup["cold cache"] == 1.0, "{catchup}");
    ensure!(catchup["store GETs"].as_f64() > Some(0.0), "a cold catch-up reads from the store: {catchup}");
    // the server's log is kept where asked, across its restart (cold cache)
    let text = std::fs::read_to_string(&log)?;
    ensure!(text.matches("shale dev started").count() == 2, "server log: {text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_archive_times_a_compactor_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("report.json");
    let args = ["archive", "--backlog-mib=2", "--partitions=2", "--producers=4", "--batch=16"];
    let archive = bench(&args, &file).await?;
    ensure!(archive["backlog"].as_f64() >= Some(2.0), "{archive}");
    ensure!(archive["archive files"].as_f64() >= Some(2.0), "one file per partition at least: {archive}");
    ensure!(archive["archive throughput (chunk bytes read)"].as_f64() > Some(0.0), "{archive}");
    // records compress (zstd chunks), so record bytes archived outrun the chunk bytes read
    let records = archive["archive throughput"].as_f64().unwrap_or(0.0);
    ensure!(
        records > archive["archive throughput (chunk bytes read)"].as_f64().unwrap_or(f64::MAX),
        "{archive}"
    );
    // the figures come from the compactor process's own /metrics
    ensure!(archive["compactor peak RSS"].as_f64() > Some(1.0), "{archive}");
    ensure!(archive["compactor CPU seconds per GiB archived"].as_f64() > Some(0.0), "{archive}");
    ensure!(archive["store PUTs per GiB archived"].as_f64() > Some(0.0), "{archive}");
    // every byte read is written once, compressed, and at most twice with merges
    let rewritten = archive["bytes rewritten per byte produced"].as_f64().unwrap_or(0.0);
    ensure!(rewritten > 0.0 && rewritten <= 2.0, "{archive}");
    ensure!(archive["archive / segments catchup ratio"].as_f64() > Some(0.0), "{archive}");
    Ok(())
}
