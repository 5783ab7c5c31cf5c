//! The Shale a benchmark runs against: one at `--url`, a `shale dev` this
//! process starts on a temporary directory, or (`--cluster`) three `shale
//! controller` and two `shale gateway` processes; started ones can restart
//! (their gateways), to empty caches.

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
    /// The first gateway.
    pub url: String,
    /// Every gateway (one but for `--cluster`).
    pub urls: Vec<String>,
    /// The bearer token requests carry, if the server needs one.
    pub token: Option<String>,
    owned: Option<Owned>,
}

struct Owned {
    /// Holds the data; deleted when the server is dropped.
    _dir: TempDir,
    log: PathBuf,
    /// Controllers, which a restart leaves running.
    controllers: Vec<Child>,
    /// `shale dev`, or the gateways, with their flags.
    gateways: Vec<(Child, Vec<String>)>,
    /// What a `shale compactor` of the cluster is started with: the
    /// controllers, the secret and the store.
    cluster_args: Vec<String>,
    /// Compactors started with [`Server::start_compactor`].
    compactors: Vec<Child>,
}

/// The cluster secret of a benchmark cluster.
const BENCH_SECRET: &str = "shale-bench-cluster-secret-0123456789";

impl Server {
    pub async fn connect_or_start(target: &TargetArgs) -> anyhow::Result<Self> {
        if let Some(url) = &target.url {
            let url = url.trim_end_matches('/').to_owned();
            return Ok(Self { urls: vec![url.clone()], url, token: target.token.clone(), owned: None });
        }
        if target.cluster {
            return Self::start_cluster(target, 3, 2).await;
        }
        Self::start_with(target, &[]).await
    }

    /// Starts `controllers` controllers and `gateways` gateways on one
    /// store; no compactor until [`Server::start_compactor`].
    pub async fn start_cluster(
        target: &TargetArgs,
        controllers: usize,
        gateways: usize,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!target.auth, "--cluster does not take --auth");
        let dir = tempfile::tempdir()?;
        let log = target.server_log.clone().unwrap_or_else(|| dir.path().join("shale.log"));
        let secret = dir.path().join("cluster.secret");
        std::fs::write(&secret, BENCH_SECRET)?;
        let secret = format!("--cluster-secret-file={}", secret.display());
        let mut store = target.store.to_args();
        if target.store.store.is_none() {
            store.push(format!("--store=file://{}", dir.path().join("objects").display()));
        }
        let ports: Vec<u16> = (0..controllers)
            .map(|_| Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
            .collect::<std::io::Result<_>>()?;
        let peers: Vec<String> =
            ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
        let mut controller_children = Vec::new();
        let mut controller_urls = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let mut args = vec![
                "controller".to_owned(),
                format!("--id={}", i + 1),
                format!("--listen=127.0.0.1:{port}"),
                format!("--peers={}", peers.join(",")),
                format!("--data-dir={}", dir.path().join(format!("controller-{}", i + 1)).display()),
                secret.clone(),
            ];
            args.extend(store.iter().cloned());
            let (child, url) = spawn(&args, &log).await?;
            controller_children.push(child);
            controller_urls.push(url);
        }
        let mut cluster_args = vec![format!("--controllers={}", controller_urls.join(",")), secret];
        cluster_args.extend(store);
        let mut gateway_children = Vec::new();
        let mut urls = Vec::new();
        for _ in 0..gateways {
            let mut args = vec!["gateway".to_owned(), "--listen=127.0.0.1:0".to_owned()];
            args.extend(cluster_args.iter().cloned());
            args.extend(target.gateway.to_args());
            if target.no_metadata_mirror {
                args.push("--no-metadata-mirror".into());
            }
            let (child, url) = spawn(&args, &log).await?;
            gateway_children.push((child, args));
            urls.push(url);
        }
        let owned = Owned {
            _dir: dir,
            log,
            controllers: controller_children,
            gateways: gateway_children,
            cluster_args,
            compactors: Vec::new(),
        };
        let server = Self { url: urls[0].clone(), urls, token: None, owned: Some(owned) };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits until every gateway is ready (its controller has a leader).
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        for url in &self.urls {
            let mut ready = false;
            for _ in 0..300 {
                if http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::ensure!(ready, "{url} never became ready");
        }
        Ok(())
    }

    /// Starts a `shale dev` with the target's flags and `extra`.
    pub async fn start_with(target: &TargetArgs, extra: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut args = vec!["dev".to_owned(), format!("--data-dir={}", dir.path().display())];
        args.extend(target.store.to_args());
        args.extend(target.gateway.to_args());
        args.extend(extra.iter().cloned());
        if target.auth {
            args.push("--auth".into());
        }
        let log = target.server_log.clone().unwrap_or_else(|| dir.path().join("shale.log"));
        let (child, url) = spawn(&args, &log).await?;
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
        let owned = Owned {
            _dir: dir,
            log,
            controllers: Vec::new(),
            gateways: vec![(child, args)],
            cluster_args: Vec::new(),
            compactors: Vec::new(),
        };
        Ok(Self { urls: vec![url.clone()], url, token, owned: Some(owned) })
    }

    /// Whether this process started the server (and can restart it).
    pub fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    /// Restarts an owned server (`shale dev`, or the gateways of a cluster)
    /// on the same data, so its caches are cold.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let Some(owned) = &mut self.owned else { return Ok(()) };
        let mut urls = Vec::new();
        for (child, args) in &mut owned.gateways {
            child.start_kill()?;
            child.wait().await?;
            let (started, url) = spawn(args, &owned.log).await?;
            *child = started;
            urls.push(url);
        }
        self.url = urls[0].clone();
        self.urls = urls;
        if !owned.controllers.is_empty() {
            self.wait_ready().await?;
        }
        Ok(())
    }

    /// Starts a `shale compactor` process against the cluster, with `extra`
    /// flags; answers the URL of its `/metrics`.
    pub async fn start_compactor(&mut self, extra: &[String]) -> anyhow::Result<String> {
        let Some(owned) = &mut self.owned else { bail!("only a started cluster can start a compactor") };
        anyhow::ensure!(!owned.cluster_args.is_empty(), "a compactor needs a cluster, not shale dev");
        let mut args = vec!["compactor".to_owned(), "--metrics-listen=127.0.0.1:0".to_owned()];
        args.extend(owned.cluster_args.iter().cloned());
        args.extend(extra.iter().cloned());
        let (child, url) = spawn(&args, &owned.log).await?;
        owned.compactors.push(child);
        Ok(url)
    }

    /// One scrape of every gateway's `/metrics`, summed.
    pub async fn metrics(&self, http: &reqwest::Client) -> anyhow::Result<Metrics> {
        let mut sum = Metrics::default();
        for url in &self.urls {
            sum.add(&Metrics::scrape(http, &format!("{url}/metrics")).await?);
        }
        Ok(sum)
    }
}

async fn spawn(args: &[String], log: &Path) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the server log {}", log.display()))?;
    let listens = args.iter().any(|a| a.starts_with("--listen") || a.starts_with("--metrics-listen"));
    let listen = if listens { None } else { Some("--listen=127.0.0.1:0") };
    let mut child = Command::new(exe)
        .args(args)
        .args(listen)
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::time::timeout(Duration::from_secs(60), BufReader::new(stdout).lines().next_line())
        .await
        .with_context(|| format!("shale {} did not start within 60 s", args[0]))??
        .with_context(|| format!("shale {} exited; see its log", args[0]))?;
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
        bail!("no URL in {line:?}");
    };
    Ok((child, url.to_owned()))
}

/// A scrape of `/metrics`: series name (with labels) → value.
#[derive(Debug, Default, Clone)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    /// One scrape of the metrics at `url`.
    pub async fn scrape(http: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let text = http.get(url).send().await?.error_for_status()?.text().await?;
        Ok(Self::parse(&text))
    }

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

    /// Adds another scrape's values (of another gateway).
    fn add(&mut self, other: &Metrics) {
        for (series, value) in &other.0 {
            *self.0.entry(series.clone()).or_default() += value;
        }
    }

    /// The sum of every series whose name starts with `prefix`.
    pub fn sum(&self, prefix: &str) -> f64 {
        self.0.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
    }

    /// The value of one series, e.g. `shale_store_requests_total{op="Put"}`; 0 if absent.
    pub fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The cumulative buckets (upper bound, count) of a histogram's series
    /// with exactly `labels` (e.g. `stage="put"`, or empty) besides `le`.
    fn buckets(&self, histogram: &str, labels: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{histogram}_bucket{{");
        let mut out: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(series, count)| {
                let inner = series.strip_prefix(&prefix)?.strip_suffix('}')?;
                let (mut le, mut rest) = (None, Vec::new());
                for label in inner.split(',') {
                    match label.strip_prefix("le=") {
                        Some(v) => le = Some(v.trim_matches('"')),
                        None => rest.push(label),
                    }
                }
                let le = match le? {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                (rest.join(",") == labels).then_some((le, *count))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// The `q` quantile of what a histogram observed since `before`, as the
    /// upper bound of the bucket it falls in (an overestimate by at most one
    /// bucket's width); `None` if nothing was observed.
    pub fn quantile_since(&self, before: &Metrics, histogram: &str, labels: &str, q: f64) -> Option<f64> {
        let earlier: HashMap<u64, f64> =
            before.buckets(histogram, labels).into_iter().map(|(le, n)| (le.to_bits(), n)).collect();
        let now = self.buckets(histogram, labels);
        let delta: Vec<(f64, f64)> =
            now.iter().map(|(le, n)| (*le, n - earlier.get(&le.to_bits()).copied().unwrap_or(0.0))).collect();
        let total = delta.last()?.1;
        if total <= 0.0 {
            return None;
        }
        delta.iter().find(|(_, n)| *n >= q * total).map(|(le, _)| *le)
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn a_quantile_is_read_from_the_buckets_observed_between_scrapes() {
        let before = Metrics::parse(
            "x_bucket{stage=\"put\",le=\"0.01\"} 10\nx_bucket{stage=\"put\",le=\"0.1\"} 10\n\
             x_bucket{stage=\"put\",le=\"+Inf\"} 10\n",
        );
        let after = Metrics::parse(
            "x_bucket{stage=\"put\",le=\"0.01\"} 100\nx_bucket{stage=\"put\",le=\"0.1\"} 109\n\
             x_bucket{stage=\"put\",le=\"+Inf\"} 110\nx_bucket{stage=\"batch\",le=\"0.01\"} 5\n",
        );
        assert_eq!(after.quantile_since(&before, "x", "stage=\"put\"", 0.5), Some(0.01));
        assert_eq!(after.quantile_since(&before, "x", "stage=\"put\"", 0.95), Some(0.1));
        assert_eq!(after.quantile_since(&before, "x", "stage=\"put\"", 1.0), Some(f64::INFINITY));
        assert_eq!(after.quantile_since(&after, "x", "stage=\"put\"", 0.5), None, "nothing new");
        assert_eq!(after.quantile_since(&before, "y", "", 0.5), None, "no such histogram");
    }
}
