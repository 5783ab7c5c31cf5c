//! A real cluster: three `shale controller` processes and two `shale gateway`
//! processes on 127.0.0.1. The controller leader is killed with SIGKILL again
//! and again during sustained produce through both gateways; each time a new
//! leader is elected, producing resumes, and the history check holds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Producer, Routing};
use serde_json::Value;
use shale_tests::{Backend, Client, History, Process, unique};

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

/// The id of the leader, as the first live controller that knows one says.
async fn leader(http: &reqwest::Client, controllers: &[Process]) -> Option<u64> {
    for c in controllers {
        let Ok(response) = http.get(format!("{}/api/status", c.url)).send().await else { continue };
        let Ok(status) = response.json::<Value>().await else { continue };
        if let Some(id) = status["leader"].as_u64() {
            return Some(id);
        }
    }
    None
}

/// Starts three controllers and `gateways` gateways; returns them and a client per gateway.
async fn cluster(
    backend: &Backend,
    dir: &std::path::Path,
    gateways: usize,
) -> anyhow::Result<(Vec<Process>, Vec<Process>, Vec<Client>)> {
    let ports = free_ports(3)?;
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let mut controllers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = (i + 1).to_string();
        let args = vec![
            "controller".into(),
            format!("--id={id}"),
            format!("--listen=127.0.0.1:{port}"),
            format!("--peers={}", peers.join(",")),
            format!("--data-dir={}", dir.join(format!("controller-{id}")).display()),
        ];
        controllers.push(Process::start(args, dir.join(format!("controller-{id}.log"))).await?);
    }
    let urls: Vec<String> = controllers.iter().map(|c| c.url.clone()).collect();
    let prefix = unique("cluster");
    let mut started = Vec::new();
    for g in 0..gateways {
        let mut args = vec![
            "gateway".into(),
            "--listen=127.0.0.1:0".into(),
            format!("--controllers={}", urls.join(",")),
            "--flush-interval-ms=10".into(),
        ];
        args.extend(backend.store_args(&prefix, &dir.join("objects")));
        started.push(Process::start(args, dir.join(format!("gateway-{g}.log"))).await?);
    }
    let clients: Vec<Client> = started.iter().map(|g| Client::new(&g.url)).collect();
    for c in &clients {
        c.wait_ready().await?;
    }
    Ok((controllers, started, clients))
}

/// A controller's view: (id, leader it knows, last applied index).
async fn status(http: &reqwest::Client, controller: &Process) -> Option<(u64, Option<u64>, u64)> {
    let s: Value = http.get(format!("{}/api/status", controller.url)).send().await.ok()?.json().await.ok()?;
    Some((s["id"].as_u64()?, s["leader"].as_u64(), s["last_applied"].as_u64().unwrap_or(0)))
}

fn spawn_producers(
    clients: &[Client],
    history: &Arc<History>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<usize>>> {
    (0..4)
        .map(|i| {
            let routing = match i {
                0 | 2 => Routing::Keyed(vec!["a".into(), "b".into(), "c".into()]),
                1 => Routing::Unkeyed,
                _ => Routing::Partition(1),
            };
            let producer = Producer {
                client: clients[i % clients.len()].clone(),
                topic: "orders".into(),
                name: format!("p{i}"),
                routing,
                requests: None,
                history: history.clone(),
                stop: stop.clone(),
                stop_on_error: false,
                keep_going: true,
            };
            tokio::spawn(producer.run())
        })
        .collect()
}

/// Waits until at least `more` records beyond `before` are acknowledged.
async fn resumed(history: &History, before: usize, more: usize) -> bool {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if history.len() > before + more {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_controller_leader_kills_lose_no_acknowledged_record() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let (mut controllers, _gateways, clients) = cluster(&backend, dir.path(), 2).await?;
        clients[0].create_topic("orders", 3).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producers = spawn_producers(&clients, &history, &stop);

        let http = reqwest::Client::new();
        let mut killed = Vec::new();
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let id = leader(&http, &controllers).await.context("no leader")?;
            let acked_before = history.len();
            controllers[(id - 1) as usize].kill9().await?;
            killed.push(id);
            // producing resumes through a new leader
            let mut resumed = false;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if history.len() > acked_before + 20 {
                    resumed = true;
                    break;
                }
            }
            ensure!(
                resumed,
                "{}: round {round}: producing did not resume after killing leader {id}",
                backend.name()
            );
            // bring it back so a majority survives the next kill
            controllers[(id - 1) as usize].restart().await?;
        }
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            p.await??;
        }
        let report = history.verify(&clients[1], "orders", 3).await?;
        ensure!(report.stored >= report.acknowledged, "{report:?}");
        eprintln!("{}: leaders killed {killed:?}, {report:?}", backend.name());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_loses_its_lead_and_catches_up_after() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let (controllers, _gateways, clients) = cluster(&backend, dir.path(), 1).await?;
        clients[0].create_topic("orders", 3).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producers = spawn_producers(&clients, &history, &stop);
        let http = reqwest::Client::new();
        tokio::time::sleep(Duration::from_millis(500)).await;

        // cut the leader off: stopped, it can neither commit nor lead
        let old = leader(&http, &controllers).await.context("no leader")?;
        let paused = &controllers[(old - 1) as usize];
        paused.signal("STOP")?;
        let before = history.len();
        let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        ensure!(
            resumed(&history, before, 20).await,
            "{}: the majority did not go on; gateway log:\n{}",
            backend.name(),
            log("gateway-0.log").lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
        let others: Vec<&Process> = controllers.iter().filter(|c| c.url != paused.url).collect();
        let new = status(&http, others[0]).await.and_then(|s| s.1).context("majority has no leader")?;
        ensure!(new != old, "a new leader was elected while {old} was stopped");

        // heal: the old leader rejoins as a follower and catches up
        paused.signal("CONT")?;
        let before = history.len();
        ensure!(resumed(&history, before, 20).await, "producing goes on after healing");
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            p.await??;
        }
        let mut caught_up = false;
        for _ in 0..100 {
            let leader_view = status(&http, others[0]).await;
            let healed_view = status(&http, paused).await;
            if let (Some((_, _, applied)), Some((_, Some(l), healed))) = (leader_view, healed_view)
                && l == new
                && healed == applied
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(caught_up, "{}: the healed node follows {new} and applied everything", backend.name());
        let report = history.verify(&clients[0], "orders", 3).await?;
        eprintln!("{}: paused leader {old}, new leader {new}, {report:?}", backend.name());
    }
    Ok(())
}
