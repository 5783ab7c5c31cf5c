//! The Shale a benchmark runs against: one at `--url`, or a `shale dev` this
//! process starts on a temporary directory (and can restart, to empty caches).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::TargetArgs;

pub struct Server {
    pub url: String,
    /// The bearer token requests carry, if the server needs one.
    pub token: Option<String>,
    owned: Option<Owned>,
}

struct Owned {
    child: Child,
    dir: TempDir,
    args: Vec<String>,
    log: PathBuf,
}

impl Server {
    pub async fn connect_or_start(target: &TargetArgs) -> anyhow::Result<Self> {
        if let Some(url) = &target.url {
            let url = url.trim_end_matches('/').to_owned();
            return Ok(Self { url, token: target.token.clone(), owned: None });
        }
        Self::start_with(target, &[]).await
    }

    /// Starts a `shale dev` with the target's flags and `extra`.
    pub async fn start_with(target: &TargetArgs, extra: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut args = target.store.to_args();
        args.extend(target.gateway.to_args());
        args.extend(extra.iter().cloned());
        if target.auth {
            args.push("--auth".into());
        }
        let log = target.server_log.clone().unwrap_or_else(|| dir.path().join("shale.log"));
        let (child, url) = spawn(&dir, &args, &log).await?;
        let token = if target.auth {
            let path = dir.path().join("admin.token");
            Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_owned(),
            )
        } else {
            None
        };
        Ok(Self { url, token, owned: Some(Owned { child, dir, args, log }) })
    }

    /// Whether this process started the server (and can restart it).
    pub fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    /// Restarts an owned server on the same data, so its caches are cold.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let Some(owned) = &mut self.owned else { return Ok(()) };
        owned.child.start_kill()?;
        owned.child.wait().await?;
        let (child, url) = spawn(&owned.dir, &owned.args, &owned.log).await?;
        owned.child = child;
        self.url = url;
        Ok(())
    }

    pub async fn metrics(&self, http: &reqwest::Client) -> anyhow::Result<Metrics> {
        let text = http.get(format!("{}/metrics", self.url)).send().await?.error_for_status()?.text().await?;
        Ok(Metrics::parse(&text))
    }
}

async fn spawn(dir: &TempDir, args: &[String], log: &Path) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the server log {}", log.display()))?;
    let mut child = Command::new(exe)
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen=127.0.0.1:0")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::time::timeout(Duration::from_secs(60), BufReader::new(stdout).lines().next_line())
        .await
        .context("shale dev did not start within 60 s")??
        .context("shale dev exited; see its log")?;
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
        bail!("no URL in {line:?}");
    };
    Ok((child, url.to_owned()))
}

/// A scrape of `/metrics`: series name (with labels) → value.
#[derive(Debug, Default, Clone)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(series)
    }

    /// The value of one series, e.g. `shale_store_requests_total{op="Put"}`; 0 if absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}
