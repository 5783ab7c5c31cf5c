//! The client commands of the real binary against a real `shale dev`.

use std::process::Stdio;

use anyhow::ensure;
use shale_core::partitioner::partition_for_key;
use shale_tests::process::binary;
use shale_tests::{Backend, Shale};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `shale ARGS` with optional stdin; returns (success, stdout, stderr).
async fn shale(url: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<(bool, String, String)> {
    let mut child = Command::new(binary())
        .args(args)
        .env("SHALE_URL", url)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    Ok((out.status.success(), String::from_utf8(out.stdout)?, String::from_utf8(out.stderr)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_produces_consumes_and_describes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Shale::start(dir.path(), &Backend::Local, "cli", &["--flush-interval-ms=5"]).await?;
    let url = server.url.as_str();

    let (ok, _, err) = shale(url, &["topic", "create", "lines", "--partitions", "2"], None).await?;
    ensure!(ok, "create: {err}");
    let (ok, _, err) =
        shale(url, &["produce", "lines", "--key-separator", ":"], Some("a:1\nb:2\nc:3\nd:4\n")).await?;
    ensure!(ok && err.contains("produced 4 record(s)"), "produce: {err}");

    let mut seen = Vec::new();
    for p in 0..2u32 {
        let (ok, out, err) =
            shale(url, &["consume", "lines", "--partition", &p.to_string(), "--key-separator", "="], None)
                .await?;
        ensure!(ok, "consume: {err}");
        for line in out.lines() {
            let (key, _) = line.split_once('=').unwrap_or_default();
            ensure!(partition_for_key(key.as_bytes(), 2) == p, "{line} in partition {p}");
            seen.push(line.to_owned());
        }
    }
    seen.sort();
    ensure!(seen == ["a=1", "b=2", "c=3", "d=4"], "{seen:?}");

    let (ok, out, _) = shale(url, &["consume", "lines", "-p", "0", "--from", "latest"], None).await?;
    ensure!(ok && out.is_empty(), "from latest prints nothing new: {out:?}");
    let (ok, out, _) = shale(url, &["topic", "list"], None).await?;
    ensure!(ok && out.contains("lines\t2"), "{out}");
    let (ok, out, _) = shale(url, &["topic", "describe", "lines"], None).await?;
    let info: serde_json::Value = serde_json::from_str(&out)?;
    let total: u64 = info["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["high_watermark"].as_u64())
        .sum();
    ensure!(ok && total == 4, "{out}");
    let (ok, _, err) = shale(url, &["consume", "nope"], None).await?;
    ensure!(!ok && err.contains("topic_not_found"), "{err}");
    let (ok, _, err) = shale(url, &["topic", "delete", "lines"], None).await?;
    ensure!(ok, "{err}");
    Ok(())
}

#[tokio::test]
async fn bad_server_flags_are_refused_before_anything_starts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data = data.to_string_lossy();
    let (ok, _, err) =
        shale("", &["dev", "--data-dir", &data, "--advertise", "gateway-1:7070"], None).await?;
    ensure!(!ok && err.contains("not an http:// or https:// URL"), "{err}");
    let (ok, _, err) = shale("", &["dev", "--data-dir", &data, "--lease-ms", "100"], None).await?;
    ensure!(!ok && err.contains("lease must be between"), "{err}");
    ensure!(!dir.path().join("data").exists(), "nothing was created");
    Ok(())
}
