//! The server cannot be held hostage: half-sent heads and silent clients are
//! closed within the header timeout, a stalled upload gives its buffer space
//! back, producers are served while 1,000 idle connections are open, and
//! SIGTERM drains requests in flight before the process exits.
//!
//! These are properties of the HTTP server, not of the object store, so they
//! run on the local disk only.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use shale_tests::{Backend, Shale, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes; returns what it sent and how long it took.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> anyhow::Result<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(within, stream.read(&mut buf))
            .await
            .context("the server kept the connection open")?;
        match n {
            Ok(0) | Err(_) => return Ok((got, start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_hold_the_server() -> anyhow::Result<()> {
    eprintln!("local disk only: these are properties of the HTTP server");
    let dir = tempfile::tempdir()?;
    let flags = [
        "--header-timeout-ms=1000",
        "--body-timeout-ms=1500",
        "--buffer-bytes=1048576",
        "--max-request-bytes=1048576",
        "--flush-interval-ms=5",
    ];
    let shale = Shale::start(dir.path(), &Backend::Local, &unique("hostage"), &flags).await?;
    let c = shale.client();
    c.create_topic("t", 1).await?;
    let at = addr(&shale.url);

    // half a request head, then nothing: closed within the header timeout
    let mut half = TcpStream::connect(&at).await?;
    half.write_all(b"POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Le").await?;
    let (_, took) = until_closed(&mut half, Duration::from_secs(5)).await?;
    ensure!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "half head closed after {took:?}"
    );
    // a client that sends nothing at all: the same
    let mut silent = TcpStream::connect(&at).await?;
    let (_, took) = until_closed(&mut silent, Duration::from_secs(5)).await?;
    ensure!(took < Duration::from_secs(3), "a silent connection closed after {took:?}");

    // a stalled upload holds the whole buffer until the body timeout, then gives it back
    let mut stalled = TcpStream::connect(&at).await?;
    let head = "POST /v1/topics/t/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n";
    stalled.write_all(head.as_bytes()).await?;
    stalled.write_all(b"{\"records\": [").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = json!({"records": [{"value": "while stalled"}]});
    let (status, body) = c.post_json("/v1/topics/t/records", &records).await?;
    ensure!(status == 429, "the stalled upload holds the buffer: {status} {body}");
    let (answer, took) = until_closed(&mut stalled, Duration::from_secs(5)).await?;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(answer.starts_with("HTTP/1.1 408"), "the stalled upload gets 408: {answer}");
    ensure!(answer.contains("request_timeout"), "in the JSON error shape: {answer}");
    ensure!(took < Duration::from_secs(3), "within the body timeout: {took:?}");
    let (status, body) = c.post_json("/v1/topics/t/records", &records).await?;
    ensure!(status == 200, "the buffer is free again: {status} {body}");

    // 1,000 idle connections do not keep producers out (this process holds
    // them open, so it needs more than the usual 1024 files too)
    rlimit::increase_nofile_limit(4096)?;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(&at).await?);
    }
    let started = Instant::now();
    for i in 0..20 {
        let (status, body) =
            c.post_json("/v1/topics/t/records", &json!({"records": [{"value": format!("r{i}")}]})).await?;
        ensure!(status == 200, "produce {i} with 1,000 idle connections open: {status} {body}");
    }
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(5), "20 produces took {took:?} with 1,000 idle connections");
    eprintln!("20 produces in {took:?} with {} idle connections open", idle.len());
    drop(idle);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_in_flight_then_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut shale =
        Shale::start(dir.path(), &Backend::Local, &unique("drain"), &["--drain-timeout-ms=5000"]).await?;
    let c = shale.client();
    c.create_topic("t", 1).await?;
    // a long-poll in flight when SIGTERM arrives is answered, not cut off
    let poll = {
        let c = c.clone();
        tokio::spawn(async move { c.fetch("t", 0, "offset=0&wait_ms=3000").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    shale.signal("TERM")?;
    let (status, body) = poll.await??;
    ensure!(status == 200, "the long-poll in flight is answered: {status} {body}");
    let exited = shale.wait_exit(Duration::from_secs(10)).await?;
    ensure!(exited, "the process exits after draining");
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(6), "drained within the bound: {took:?}");
    ensure!(c.get("/healthz").await.is_err(), "no longer accepting");
    let log = shale.log();
    ensure!(log.contains("draining connections"), "the drain is logged");
    Ok(())
}
