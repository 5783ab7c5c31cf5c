//! Helpers for the Kafka listener's tests: the clients the test command
//! installs, `shale dev` with a Kafka listener, raw request frames.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::{Backend, Shale};

/// A client the test command installs, or why the test cannot run.
pub fn client(var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| {
        format!("{var} is not set: run the test command (scripts/test.sh), which installs the Kafka clients")
    })
}

/// Runs a client program; fails with its output unless it exits 0.
pub async fn run(mut command: Command, what: &str) -> anyhow::Result<String> {
    command.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .with_context(|| format!("{what} took over 240 s"))??;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", out.status);
    eprintln!("{what}: {}", stdout.trim());
    Ok(stdout.into_owned())
}

/// `shale dev` with a Kafka listener on a free port; answers it and the
/// Kafka address.
pub async fn start(dir: &Path, backend: &Backend, prefix: &str) -> anyhow::Result<(Shale, String)> {
    let shale = Shale::start(dir, backend, prefix, &["--kafka-listen=127.0.0.1:0"]).await?;
    let kafka = kafka_address(&dir.join("shale.log")).await?;
    Ok((shale, kafka))
}

/// The Kafka listener's address, read from the server's log once it is
/// there (so no port is picked twice).
pub async fn kafka_address(log: &Path) -> anyhow::Result<String> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let addr = text
            .lines()
            .find_map(|l| l.split_once("kafka listener started addr=").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(addr) = addr {
            return Ok(addr.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no kafka listener in {}", log.display())
}

/// A Kafka request frame: header v1 (key, version, correlation id, client id) and body.
pub fn frame(key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&correlation.to_be_bytes());
    f.extend_from_slice(&4i16.to_be_bytes());
    f.extend_from_slice(b"test");
    f.extend_from_slice(body);
    let mut out = (f.len() as i32).to_be_bytes().to_vec();
    out.extend(f);
    out
}

/// The next answer on the connection (after its length), within 10 s.
pub async fn answer(stream: &mut tokio::net::TcpStream) -> anyhow::Result<Vec<u8>> {
    let len = tokio::time::timeout(Duration::from_secs(10), stream.read_i32()).await??;
    let mut body = vec![0; usize::try_from(len)?];
    stream.read_exact(&mut body).await?;
    Ok(body)
}
