//! Measures `shale-lambda`'s cold start the way Lambda sees it: from process
//! start to the first answered invocation (a Function URL `GET /readyz`),
//! through the Runtime API emulator, against a real controller on loopback.
//!
//!   cargo run -p shale-tests --bin lambda-cold-start -- BINARY [RUNS]
//!
//! Prints the binary's size (and stripped size, when `strip` is on PATH;
//! the stripped copy is the one started) and the distribution of cold starts.

use std::time::Duration;

use anyhow::{Context, bail};
use shale_tests::cluster::single_controller;
use shale_tests::lambda::{Emulator, HttpAnswer, http_event};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let binary = args.next().context("usage: lambda-cold-start BINARY [RUNS]")?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(20);
    let size = std::fs::metadata(&binary)?.len();
    let dir = tempfile::tempdir()?;
    let stripped = dir.path().join("stripped");
    let stripped_size =
        match std::process::Command::new("strip").arg("-o").arg(&stripped).arg(&binary).status() {
            Ok(s) if s.success() => Some(std::fs::metadata(&stripped)?.len()),
            _ => None,
        };
    let controller = single_controller(dir.path()).await?;
    let env: Vec<(String, String)> = [
        ("SHALE_CONTROLLERS", controller.url.clone()),
        ("SHALE_CLUSTER_SECRET_FILE", dir.path().join("cluster.secret").display().to_string()),
        ("SHALE_STORE", format!("file://{}", dir.path().join("objects").display())),
        ("SHALE_INSECURE_NO_AUTH", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut starts = Vec::new();
    // the first run also waits out the controller's election; it is not counted
    for run in 0..=runs {
        let emulator = Emulator::start().await?;
        let mut f = emulator.spawn_binary(
            std::path::Path::new(&binary),
            "gateway",
            &env,
            &dir.path().join("lambda.log"),
        )?;
        let answer = HttpAnswer::from_outcome(
            f.invoke(http_event("GET", "/readyz", &[], None, false), Duration::from_secs(30)).await?,
        )?;
        let took = f.age();
        f.kill().await;
        if run == 0 {
            continue;
        }
        if answer.status != 200 {
            bail!("run {run}: /readyz answered {}: {}", answer.status, f.log());
        }
        starts.push(took);
    }
    starts.sort();
    let at = |q: f64| starts[((starts.len() as f64 - 1.0) * q).round() as usize];
    println!("binary: {binary}");
    println!("size: {:.1} MiB", size as f64 / (1 << 20) as f64);
    if let Some(s) = stripped_size {
        println!("stripped size: {:.1} MiB", s as f64 / (1 << 20) as f64);
    }
    println!(
        "process start to first answered invocation over {runs} cold starts: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    Ok(())
}
