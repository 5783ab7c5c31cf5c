//! Starting, killing and talking to a real `shale dev` process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where objects live for a test run.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `file://` under the test's data directory.
    Local,
    /// A real S3-compatible server; `url` is `s3://BUCKET`.
    S3 { url: String, endpoint: String, region: String, access_key: String, secret_key: String },
}

impl Backend {
    /// The local disk, plus S3 when the environment names a server.
    pub fn all() -> Vec<Backend> {
        let mut out = vec![Backend::Local];
        match Self::s3_from_env() {
            Some(s3) => out.push(s3),
            None => eprintln!(
                "S3 backend skipped: SHALE_TEST_S3_URL is not set (scripts/test.sh starts Garage and sets it)"
            ),
        }
        out
    }

    fn s3_from_env() -> Option<Backend> {
        let var = |k: &str| std::env::var(k).ok();
        Some(Backend::S3 {
            url: var("SHALE_TEST_S3_URL")?,
            endpoint: var("SHALE_TEST_S3_ENDPOINT")?,
            region: var("SHALE_TEST_S3_REGION").unwrap_or_else(|| "garage".into()),
            access_key: var("SHALE_TEST_S3_ACCESS_KEY_ID")?,
            secret_key: var("SHALE_TEST_S3_SECRET_ACCESS_KEY")?,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::S3 { .. } => "s3",
        }
    }

    /// Store flags for `shale dev` or `shale gateway`; each S3 run gets its own
    /// prefix, and the local disk uses `local_dir` for `gateway` (`dev` picks
    /// its own).
    pub fn store_args(&self, prefix: &str, local_dir: &Path) -> Vec<String> {
        match self {
            Backend::Local => vec![format!("--store=file://{}", local_dir.display())],
            Backend::S3 { .. } => self.args(prefix),
        }
    }

    /// Flags for `shale dev`; each S3 run gets its own prefix.
    fn args(&self, prefix: &str) -> Vec<String> {
        match self {
            Backend::Local => vec![],
            Backend::S3 { url, endpoint, region, access_key, secret_key } => vec![
                format!("--store={url}/{prefix}"),
                format!("--s3-endpoint={endpoint}"),
                format!("--s3-region={region}"),
                format!("--s3-access-key-id={access_key}"),
                format!("--s3-secret-access-key={secret_key}"),
                "--s3-allow-http".into(),
            ],
        }
    }
}

/// The `shale` binary next to the test executable (built by the test command).
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("SHALE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // a test runs from target/PROFILE/deps, a tool (src/bin) from target/PROFILE
    let beside = exe.with_file_name("shale");
    if beside.exists() {
        return beside;
    }
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    dir.join("shale")
}

/// Starts `shale ARGS` (a server command that prints its URL on its first line
/// of output), logging to `log`; returns the process and the URL.
pub async fn spawn_shale(args: &[String], log: &Path) -> anyhow::Result<(Child, String)> {
    let bin = binary();
    if !bin.exists() {
        bail!("{} is missing: build it first (cargo build --bin shale)", bin.display());
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = Command::new(&bin)
        .args(args)
        .env_remove("SHALE_LOG")
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("shale did not print its URL within 60 s")??
        .context("shale exited before printing its URL")?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .with_context(|| format!("no URL in {line:?}"))?
        .to_owned();
    Ok((child, url))
}

/// Any `shale` server process, restartable with the same arguments. Killed when dropped.
pub struct Process {
    child: Child,
    pub url: String,
    args: Vec<String>,
    log: PathBuf,
}

impl Process {
    pub async fn start(args: Vec<String>, log: PathBuf) -> anyhow::Result<Self> {
        let (child, url) = spawn_shale(&args, &log).await?;
        Ok(Self { child, url, args, log })
    }

    /// The flags it was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// `kill -9`.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.start_kill()?;
            self.child.wait().await?;
        }
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory (`VmHWM`) in KiB, read from `/proc`.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends a signal by name (`STOP`, `CONT`, …) with `kill`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("process has exited")?;
        let status =
            std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }

    /// Waits up to `within` for the process to exit; whether it did.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<bool> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Starts it again with the same arguments (and data).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        let (child, url) = spawn_shale(&self.args, &self.log).await?;
        self.child = child;
        self.url = url;
        Ok(())
    }
}

/// A running `shale dev`. Killed when dropped.
pub struct Shale {
    process: Process,
    pub url: String,
    data_dir: PathBuf,
}

impl Shale {
    /// Starts `shale dev` on a fresh port with the given backend and extra flags.
    pub async fn start(
        data_dir: &Path,
        backend: &Backend,
        prefix: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["dev".to_owned(), "--data-dir".to_owned(), data_dir.display().to_string()];
        args.push("--listen=127.0.0.1:0".into());
        args.extend(backend.args(prefix));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let process = Process::start(args, data_dir.join("shale.log")).await?;
        let shale = Self { url: process.url.clone(), process, data_dir: data_dir.to_owned() };
        shale.client().wait_ready().await?;
        Ok(shale)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// `kill -9`: no shutdown, no flush.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.process.kill9().await
    }

    /// Sends a signal by name (`TERM`, `STOP`, …).
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        self.process.signal(name)
    }

    /// Waits up to `within` for the process to exit; whether it did.
    pub async fn wait_exit(&mut self, within: Duration) -> anyhow::Result<bool> {
        self.process.wait_exit(within).await
    }

    /// Starts a new process on the same data directory and flags.
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        self.process.restart().await?;
        self.url = self.process.url.clone();
        self.client().wait_ready().await?;
        Ok(self)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("shale.log")).unwrap_or_default()
    }
}

/// A thin HTTP client for the `/v1` API.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
}

/// Status and JSON body of an answer.
pub type Answer = (u16, Value);

impl Client {
    pub fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, url: url.trim_end_matches('/').to_owned() }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.http.get(format!("{}{path}", self.url))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(body)).await
    }

    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..300 {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} never became ready", self.url)
    }

    pub async fn create_topic(&self, name: &str, partitions: u32) -> anyhow::Result<()> {
        let (status, body) =
            self.post_json("/v1/topics", &json!({"name": name, "partitions": partitions})).await?;
        if status != 201 {
            bail!("create topic {name}: {status} {body}");
        }
        Ok(())
    }

    /// GET records of one partition from an offset.
    pub async fn fetch(&self, topic: &str, partition: u32, query: &str) -> anyhow::Result<Answer> {
        self.get(&format!("/v1/topics/{topic}/partitions/{partition}/records?{query}")).await
    }
}
