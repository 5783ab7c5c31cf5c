//! Consumer groups with real processes: three controllers, two gateways, a
//! group of three members consuming six partitions while producers write.
//! A member is killed, then a gateway, then the controller leader; the
//! group is stopped cleanly, the whole cluster restarted, and a new member
//! resumes where the group committed.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{Producer, Routing};
use shale_tests::cluster::{Options, cluster, cluster_http, leader};
use shale_tests::group::{Deliveries, Member, View, committed};
use shale_tests::{Backend, Client, History};

const TOPIC: &str = "events";
const GROUP: &str = "billing";
const PARTITIONS: u32 = 6;
const SESSION_MS: u64 = 3000;
/// What the gateway answers as `heartbeat_interval_ms` for that session.
const HEARTBEAT_MS: u64 = SESSION_MS / 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn producers(
    client: &Client,
    history: &Arc<History>,
    stop: &Arc<AtomicBool>,
    requests: Option<usize>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<usize>>> {
    [
        Routing::Keyed(vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()]),
        Routing::Unkeyed,
        Routing::Partition(5),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, routing)| {
        let producer = Producer {
            client: client.clone(),
            topic: TOPIC.into(),
            name: format!("p{i}"),
            routing,
            requests,
            history: history.clone(),
            stop: stop.clone(),
            stop_on_error: false,
            keep_going: true,
        };
        tokio::spawn(producer.run())
    })
    .collect()
}

struct Running {
    views: Vec<Arc<Mutex<View>>>,
    stops: Vec<Arc<AtomicBool>>,
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<usize>>>,
}

fn members(ids: &[&str], clients: &[Client], deliveries: &Arc<Deliveries>) -> Running {
    let mut running = Running { views: Vec::new(), stops: Vec::new(), handles: Vec::new() };
    for (i, id) in ids.iter().enumerate() {
        let mut order = clients.to_vec();
        order.rotate_left(i % clients.len());
        let view = Arc::new(Mutex::new(View::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let member = Member {
            id: (*id).to_owned(),
            group: GROUP.into(),
            topic: TOPIC.into(),
            clients: order,
            session_timeout_ms: SESSION_MS,
            deliveries: deliveries.clone(),
            view: view.clone(),
            stop: stop.clone(),
        };
        running.views.push(view);
        running.stops.push(stop);
        running.handles.push(tokio::spawn(member.run()));
    }
    running
}

/// Waits until the members' views cover every partition exactly once,
/// spread evenly.
async fn settled(views: &[Arc<Mutex<View>>], within: Duration) -> anyhow::Result<Vec<View>> {
    let deadline = Instant::now() + within;
    loop {
        let now: Vec<View> = views.iter().map(|v| lock(v).clone()).collect();
        let total: usize = now.iter().map(|v| v.assignment.len()).sum();
        let union: std::collections::BTreeSet<u32> =
            now.iter().flat_map(|v| v.assignment.iter().copied()).collect();
        let sizes = now.iter().map(|v| v.assignment.len());
        let balanced = sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0) <= 1;
        if total == PARTITIONS as usize && union.len() == PARTITIONS as usize && balanced {
            return Ok(now);
        }
        ensure!(Instant::now() < deadline, "the group never settled: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every acknowledged record was delivered to some member.
async fn all_delivered(history: &History, deliveries: &Deliveries, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let missing: Vec<(u32, u64)> = {
            let seen = lock(&deliveries.seen);
            history.acks().iter().map(|a| (a.partition, a.offset)).filter(|k| !seen.contains(k)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} acknowledged records never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn high_watermarks(client: &Client) -> anyhow::Result<BTreeMap<u32, u64>> {
    let (status, t) = client.get(&format!("/v1/topics/{TOPIC}")).await?;
    ensure!(status == 200, "describe: {status} {t}");
    Ok(t["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["partition"].as_u64()? as u32, p["high_watermark"].as_u64()?)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_shares_partitions_survives_kills_and_resumes_where_it_committed() -> anyhow::Result<()> {
    for backend in Backend::all() {
        group_at_work(&backend).await.with_context(|| format!("on {}", backend.name()))?;
    }
    Ok(())
}

async fn group_at_work(backend: &Backend) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = Options { gateways: 2, ..Options::default() };
    let (mut controllers, mut gateways, clients) = cluster(backend, dir.path(), &options).await?;
    clients[0].create_topic(TOPIC, PARTITIONS).await?;
    let history = Arc::new(History::default());
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producing = producers(&clients[1], &history, &stop_producing, None);
    let deliveries = Arc::new(Deliveries::default());
    let group = members(&["m0", "m1", "m2"], &clients, &deliveries);

    // committed offsets, watched all along, never go backwards
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (client, stop) = (clients[1].clone(), stop_watching.clone());
        tokio::spawn(async move {
            let mut last: BTreeMap<u32, u64> = BTreeMap::new();
            let mut polls = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(now) = committed(&client, GROUP).await {
                    for (p, o) in &now {
                        let before = last.get(p).copied().unwrap_or(0);
                        ensure!(
                            *o >= before,
                            "partition {p}'s committed offset went back from {before} to {o}"
                        );
                    }
                    last = now;
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            Ok::<usize, anyhow::Error>(polls)
        })
    };

    let views = settled(&group.views, Duration::from_secs(20)).await?;
    ensure!(views.iter().all(|v| v.assignment.len() == 2), "six partitions over three members: {views:?}");

    // a member killed: it stops heartbeating, its partitions move
    let victim = views[2].assignment.clone();
    group.handles[2].abort();
    let killed = Instant::now();
    let moved = loop {
        let held: std::collections::BTreeSet<u32> =
            group.views[..2].iter().flat_map(|v| lock(v).assignment.clone()).collect();
        if victim.iter().all(|p| held.contains(p)) {
            break killed.elapsed();
        }
        ensure!(killed.elapsed() < Duration::from_secs(20), "the killed member's partitions never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // the session, a heartbeat interval, and up to a second for the
    // leader's expiry tick and the members' next reads under a loaded CI
    let bound = Duration::from_millis(SESSION_MS + HEARTBEAT_MS + 1000);
    ensure!(moved <= bound, "partitions moved {moved:?} after the kill, over {bound:?}");
    eprintln!("{}: a killed member's partitions moved after {moved:?}", backend.name());

    // a gateway killed: members carry on through the other, same assignment
    let before = settled(&group.views[..2], Duration::from_secs(10)).await?;
    let delivered_before = lock(&deliveries.seen).len();
    gateways[0].kill9().await?;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let after: Vec<View> = group.views[..2].iter().map(|v| lock(v).clone()).collect();
    ensure!(after == before, "the members' assignment changed when a gateway died: {before:?} → {after:?}");
    ensure!(lock(&deliveries.seen).len() > delivered_before, "nothing was delivered after the gateway died");

    // the controller leader killed: the new leader gives every member a
    // full session before expiring anyone, so nobody loses partitions
    let http = cluster_http();
    let leading = leader(&http, &controllers).await.context("a controller leader")?;
    let steady = settled(&group.views[..2], Duration::from_secs(10)).await?;
    controllers[leading as usize - 1].kill9().await?;
    tokio::time::sleep(Duration::from_millis(SESSION_MS + 1500)).await;
    let after: Vec<View> = group.views[..2].iter().map(|v| lock(v).clone()).collect();
    if after != steady {
        let ended: Vec<String> = group.handles[..2].iter().map(|h| h.is_finished().to_string()).collect();
        anyhow::bail!(
            "a controller failover cost members their partitions: {steady:?} → {after:?} (ended: {ended:?})"
        );
    }
    controllers[leading as usize - 1].restart().await?;

    stop_producing.store(true, Ordering::Relaxed);
    for p in producing {
        p.await??;
    }
    if let Err(e) = all_delivered(&history, &deliveries, Duration::from_secs(30)).await {
        for (i, h) in group.handles.into_iter().enumerate().take(2) {
            if h.is_finished() {
                return Err(e.context(format!("member m{i} ended: {:?}", h.await)));
            }
        }
        return Err(e);
    }
    for stop in &group.stops[..2] {
        stop.store(true, Ordering::Relaxed);
    }
    for h in group.handles.into_iter().take(2) {
        h.await??;
    }
    stop_watching.store(true, Ordering::Relaxed);
    let polls = watcher.await??;
    ensure!(polls > 10, "the committed offsets were watched only {polls} times");
    let hw = high_watermarks(&clients[1]).await?;
    let done = committed(&clients[1], GROUP).await?;
    ensure!(done == hw, "a clean stop commits everything read: committed {done:?}, high watermarks {hw:?}");

    // a clean shutdown of the whole cluster, then a restart
    for g in gateways.iter_mut().skip(1) {
        g.signal("TERM")?;
        ensure!(g.wait_exit(Duration::from_secs(15)).await?, "a gateway did not stop on SIGTERM");
    }
    for c in &mut controllers {
        c.signal("TERM")?;
        ensure!(c.wait_exit(Duration::from_secs(15)).await?, "a controller did not stop on SIGTERM");
    }
    for c in &mut controllers {
        c.restart().await?;
    }
    for g in &mut gateways {
        g.restart().await?;
    }
    let clients: Vec<Client> = gateways.iter().map(|g| Client::new(&g.url)).collect();
    for c in &clients {
        c.wait_ready().await?;
    }
    ensure!(committed(&clients[0], GROUP).await? == done, "the committed offsets survive the restart");
    let history = Arc::new(History::default());
    for p in producers(&clients[0], &history, &Arc::new(AtomicBool::new(false)), Some(10)) {
        p.await??;
    }
    let resumed = Arc::new(Deliveries::default());
    let again = members(&["m3"], &clients, &resumed);
    all_delivered(&history, &resumed, Duration::from_secs(30)).await?;
    let first = lock(&resumed.first).clone();
    for (p, o) in &first {
        ensure!(
            done.get(p) == Some(o),
            "partition {p} resumed at {o}, but the group had committed {:?}",
            done.get(p)
        );
    }
    ensure!(!first.is_empty(), "nothing was read after the restart");
    again.stops[0].store(true, Ordering::Relaxed);
    for h in again.handles {
        h.await??;
    }
    Ok(())
}
