//! A real cluster on 127.0.0.1: `shale controller` processes and `shale
//! gateway` processes sharing one store.

use std::path::Path;

use serde_json::Value;

use crate::{Backend, Client, Process, unique};

/// Gateway lease in the tests: short, so leadership moves fast.
pub const LEASE_MS: u64 = 2000;

/// The cluster secret of every test cluster.
pub const CLUSTER_SECRET: &str = "shale-test-cluster-secret-0123456789";

/// An HTTP client for the controllers' API: it presents the cluster secret.
pub fn cluster_http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {CLUSTER_SECRET}")) {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap_or_else(|_| reqwest::Client::new())
}

/// Writes the cluster secret to `dir/cluster.secret`; returns its flag.
pub fn secret_flag(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("cluster.secret");
    std::fs::write(&path, CLUSTER_SECRET)?;
    Ok(format!("--cluster-secret-file={}", path.display()))
}

/// `n` free ports on 127.0.0.1.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// The id of the leader, as the first live controller that knows one says.
pub async fn leader(http: &reqwest::Client, controllers: &[Process]) -> Option<u64> {
    for c in controllers {
        let Ok(response) = http.get(format!("{}/api/status", c.url)).send().await else { continue };
        let Ok(status) = response.json::<Value>().await else { continue };
        if let Some(id) = status["leader"].as_u64() {
            return Some(id);
        }
    }
    None
}

/// A one-node controller cluster in `dir` (with the cluster secret).
pub async fn single_controller(dir: &Path) -> anyhow::Result<Process> {
    let port = free_ports(1)?[0];
    let args = controller_args(1, port, &format!("1=127.0.0.1:{port}"), dir, 1000)?;
    Process::start(args, dir.join("controller.log")).await
}

/// How a test cluster is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub gateways: usize,
    /// Controllers snapshot (and copy the snapshot to the bucket) this often.
    pub snapshot_every: u64,
    pub flush_interval_ms: u64,
    /// More flags for every gateway.
    pub gateway_flags: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self { gateways: 1, snapshot_every: 50, flush_interval_ms: 10, gateway_flags: Vec::new() }
    }
}

/// The flags of controller `id` of a cluster whose nodes are `peers`.
pub fn controller_args(
    id: u64,
    port: u16,
    peers: &str,
    dir: &Path,
    snapshot_every: u64,
) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        "controller".into(),
        secret_flag(dir)?,
        format!("--id={id}"),
        format!("--listen=127.0.0.1:{port}"),
        format!("--peers={peers}"),
        format!("--data-dir={}", dir.join(format!("controller-{id}")).display()),
        format!("--snapshot-every={snapshot_every}"),
    ])
}

/// Starts three controllers and `options.gateways` gateways; returns them
/// and a client per gateway.
pub async fn cluster(
    backend: &Backend,
    dir: &Path,
    options: &Options,
) -> anyhow::Result<(Vec<Process>, Vec<Process>, Vec<Client>)> {
    let ports = free_ports(3)?;
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let prefix = unique("cluster");
    let store = backend.store_args(&prefix, &dir.join("objects"));
    let mut controllers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let mut args = controller_args(id, *port, &peers.join(","), dir, options.snapshot_every)?;
        args.extend(store.iter().cloned());
        controllers.push(Process::start(args, dir.join(format!("controller-{id}.log"))).await?);
    }
    let urls: Vec<String> = controllers.iter().map(|c| c.url.clone()).collect();
    let mut started = Vec::new();
    for g in 0..options.gateways {
        let mut args = vec![
            "gateway".into(),
            "--listen=127.0.0.1:0".into(),
            format!("--controllers={}", urls.join(",")),
            format!("--flush-interval-ms={}", options.flush_interval_ms),
            format!("--lease-ms={LEASE_MS}"),
            secret_flag(dir)?,
        ];
        args.extend(store.iter().cloned());
        args.extend(options.gateway_flags.iter().cloned());
        started.push(Process::start(args, dir.join(format!("gateway-{g}.log"))).await?);
    }
    let clients: Vec<Client> = started.iter().map(|g| Client::new(&g.url)).collect();
    for c in &clients {
        c.wait_ready().await?;
    }
    Ok((controllers, started, clients))
}

/// A controller's view: (id, leader it knows, last applied index).
pub async fn status(http: &reqwest::Client, controller: &Process) -> Option<(u64, Option<u64>, u64)> {
    let s: Value = http.get(format!("{}/api/status", controller.url)).send().await.ok()?.json().await.ok()?;
    Some((s["id"].as_u64()?, s["leader"].as_u64(), s["last_applied"].as_u64().unwrap_or(0)))
}
