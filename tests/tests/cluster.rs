//! A real cluster: three `shale controller` processes and two `shale gateway`
//! processes on 127.0.0.1. The controller leader is killed with SIGKILL again
//! and again during sustained produce through both gateways; each time a new
//! leader is elected, producing resumes, and the history check holds.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Producer, Routing};
use serde_json::{Value, json};
use shale_tests::cluster::{LEASE_MS, Options, cluster, cluster_http, leader, status};
use shale_tests::leader::{LeaderProducer, partition_leaders};
use shale_tests::{Backend, Client, History, Process};

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
        let (mut controllers, _gateways, clients) =
            cluster(&backend, dir.path(), &Options { gateways: 2, ..Options::default() }).await?;
        clients[0].create_topic("orders", 3).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producers = spawn_producers(&clients, &history, &stop);

        let http = cluster_http();
        let mut killed = Vec::new();
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let id = leader(&http, &controllers).await.context("no leader")?;
            let acked_before = history.len();
            controllers[(id - 1) as usize].kill9().await?;
            killed.push(id);
            // producing resumes through a new leader
            ensure!(
                resumed(&history, acked_before, 20).await,
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
        let (controllers, _gateways, clients) = cluster(&backend, dir.path(), &Options::default()).await?;
        clients[0].create_topic("orders", 3).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producers = spawn_producers(&clients, &history, &stop);
        let http = cluster_http();
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

/// The index of the snapshot a node says it restored from the bucket, if it did.
fn restored_index(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("restored the snapshot from the bucket"))?;
    let key = line.split("controller/snapshots/").nth(1)?;
    key.split(".snap").next()?.split_once('-')?.1.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_controller_rejoins_from_the_snapshot_in_the_bucket() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let (mut controllers, _gateways, clients) =
            cluster(&backend, dir.path(), &Options::default()).await?;
        clients[0].create_topic("orders", 3).await?;
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producers = spawn_producers(&clients, &history, &stop);
        let http = cluster_http();
        // enough entries for several snapshots (one every 50)
        let mut applied = 0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            applied = status(&http, &controllers[0]).await.map_or(0, |s| s.2);
            if applied > 200 {
                break;
            }
        }
        ensure!(applied > 200, "{}: only {applied} entries applied", backend.name());

        // wipe a follower: kill it, delete its whole data directory, start it again
        let leader_id = leader(&http, &controllers).await.context("no leader")?;
        let wiped = (0..3).find(|i| *i as u64 + 1 != leader_id).context("a follower")?;
        let id = wiped + 1;
        controllers[wiped].kill9().await?;
        std::fs::remove_dir_all(dir.path().join(format!("controller-{id}")))?;
        let before = history.len();
        ensure!(resumed(&history, before, 20).await, "the majority goes on without node {id}");
        controllers[wiped].restart().await?;
        let log = std::fs::read_to_string(dir.path().join(format!("controller-{id}.log")))?;
        let index = restored_index(&log).with_context(|| {
            format!("{}: node {id} did not restore a snapshot from the bucket", backend.name())
        })?;
        ensure!(index >= 50, "restored snapshot at index {index}, expected a recent one");

        // it catches up with the leader
        let before = history.len();
        ensure!(resumed(&history, before, 20).await, "producing goes on after the rejoin");
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            p.await??;
        }
        let mut caught_up = None;
        let mut views = Vec::new();
        for _ in 0..100 {
            views = futures::future::join_all(controllers.iter().map(|c| status(&http, c))).await;
            let applied: Vec<u64> = views.iter().map(|v| v.map_or(0, |s| s.2)).collect();
            if views.iter().all(Option::is_some) && applied.iter().all(|a| *a == applied[0]) {
                caught_up = Some(applied[0]);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caught_up = caught_up.with_context(|| {
            let log =
                std::fs::read_to_string(dir.path().join(format!("controller-{id}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!("node {id} did not catch up: {views:?}\n{}", tail.join("\n"))
        })?;
        ensure!(caught_up > index, "node {id} applied entries after its snapshot");
        let mut voting = false;
        for _ in 0..50 {
            let log = std::fs::read_to_string(dir.path().join(format!("controller-{id}.log")))?;
            voting = log.contains("caught up after the restore: voting");
            if voting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(voting, "node {id} votes again once caught up");

        // it is a full voter: with the other follower gone it makes the majority
        let other = (0..3).find(|i| *i != wiped && *i as u64 + 1 != leader_id).context("other follower")?;
        controllers[other].kill9().await?;
        let (status_code, _) = clients[0]
            .post_json("/v1/topics/orders/records", &serde_json::json!({"records": [{"value": "after"}]}))
            .await?;
        ensure!(status_code == 200, "a commit needs node {id} now, and it was {status_code}");
        let report = history.verify(&clients[0], "orders", 3).await?;
        eprintln!(
            "{}: node {id} restored snapshot {index} and caught up to {caught_up}; {report:?}",
            backend.name()
        );
    }
    Ok(())
}

/// Partitions led per gateway URL.
fn leader_counts(leaders: &[(Option<String>, u64)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (leader, _) in leaders {
        *out.entry(leader.clone().unwrap_or_default()).or_default() += 1;
    }
    out
}

type Leaders = Vec<(Option<String>, u64)>;

/// Polls the leadership of `orders` every 50 ms until `done` holds or
/// `within` has passed; returns the last view.
async fn leaders_until(
    clients: &[Client],
    within: Duration,
    done: impl Fn(&Leaders) -> bool,
) -> anyhow::Result<Leaders> {
    let start = std::time::Instant::now();
    loop {
        let leaders = partition_leaders(clients, "orders").await?;
        if done(&leaders) || start.elapsed() >= within {
            return Ok(leaders);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_its_partitions_and_keyed_retries_land_exactly_once() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let (controllers, mut gateways, clients) =
            cluster(&backend, dir.path(), &Options { gateways: 3, ..Options::default() }).await?;
        clients[0].create_topic("orders", 6).await?;
        // leadership spreads over the three gateways: two partitions each
        let even = |l: &Leaders| {
            let counts = leader_counts(l);
            gateways.iter().all(|g| counts.get(&g.url) == Some(&2))
        };
        let leaders = leaders_until(&clients, Duration::from_secs(10), even).await?;
        ensure!(even(&leaders), "not spread evenly: {:?}", leader_counts(&leaders));

        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..3)
            .map(|i| {
                let producer = LeaderProducer {
                    gateways: clients.clone(),
                    topic: "orders".into(),
                    partitions: 6,
                    first_partition: 2 * i,
                    name: format!("p{i}"),
                    history: history.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(producer.run())
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let victim = gateways[1].url.clone();
        let before = partition_leaders(&clients, "orders").await?;
        let acked_before = history.len();
        gateways[1].kill9().await?;
        let killed = std::time::Instant::now();
        // within the lease its partitions move to the others, with new epochs
        let moved = |l: &Leaders| l.iter().all(|(l, _)| l.is_some() && l.as_ref() != Some(&victim));
        let after = leaders_until(&clients, Duration::from_millis(LEASE_MS + 3000), moved).await?;
        let moved_in = killed.elapsed();
        ensure!(
            moved(&after),
            "{}: partitions still led by the killed gateway after {moved_in:?}: {after:?}",
            backend.name()
        );
        ensure!(
            moved_in <= Duration::from_millis(LEASE_MS + 500),
            "{}: leadership moved after {moved_in:?}, lease is {LEASE_MS} ms",
            backend.name()
        );
        for ((old, old_epoch), (new, new_epoch)) in before.iter().zip(&after) {
            if old.as_ref() == Some(&victim) {
                ensure!(new_epoch > old_epoch, "a moved partition gets a new epoch: {before:?} → {after:?}");
            } else {
                ensure!(new == old && new_epoch == old_epoch, "others stay put: {before:?} → {after:?}");
            }
        }
        let counts = leader_counts(&after);
        ensure!(counts.values().all(|n| *n == 3), "the two survivors lead three each: {counts:?}");
        let live: Value =
            cluster_http().get(format!("{}/api/gateways", controllers[2].url)).send().await?.json().await?;
        let live: Vec<&str> =
            live.as_array().into_iter().flatten().filter_map(|g| g["url"].as_str()).collect();
        ensure!(live.len() == 2 && !live.contains(&victim.as_str()), "live gateways: {live:?}");
        ensure!(resumed(&history, acked_before, 50).await, "producing goes on through the survivors");

        stop.store(true, Ordering::Relaxed);
        let mut retries = 0;
        for p in producers {
            let stats = p.await??;
            retries += stats.retries;
            ensure!(stats.to_leader * 10 >= stats.requests * 9, "requests follow leadership: {stats:?}");
            eprintln!("{}: {stats:?}", backend.name());
        }
        ensure!(retries > 0, "some requests met the killed gateway and were retried");
        let report = history.verify(&clients[0], "orders", 6).await?;
        // every request was retried until acknowledged, so exactly once means
        // the log holds the acknowledged records and nothing else
        ensure!(report.stored == report.acknowledged, "{}: {report:?}", backend.name());
        eprintln!("{}: leadership moved in {moved_in:?}, {retries} retries, {report:?}", backend.name());

        // a gateway joining takes its share back, each moved partition with a new epoch
        gateways[1].restart().await?;
        let joined = gateways[1].url.clone();
        let took_share = |l: &Leaders| leader_counts(l).get(&joined) == Some(&2);
        let rebalanced = leaders_until(&clients, Duration::from_secs(10), took_share).await?;
        let counts = leader_counts(&rebalanced);
        ensure!(counts.len() == 3 && counts.values().all(|n| *n == 2), "after the join: {counts:?}");
        for ((old, old_epoch), (new, new_epoch)) in after.iter().zip(&rebalanced) {
            ensure!(new == old || new_epoch > old_epoch, "a moved partition gets a new epoch");
        }
    }
    Ok(())
}

/// The gateway's controller calls by call, from its `/metrics`.
async fn controller_calls(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = client.http.get(format!("{}/metrics", client.url)).send().await?.text().await?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("shale_controller_calls_total{call=\"")?;
            let (call, value) = rest.split_once("\"} ")?;
            Some((call.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, call: &str) -> u64 {
    after.get(call).copied().unwrap_or(0) - before.get(call).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_read_their_metadata_from_a_mirror_and_still_read_every_write() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let (_controllers, _gateways, clients) =
            cluster(&backend, dir.path(), &Options { gateways: 2, ..Options::default() }).await?;
        let (a, b) = (&clients[0], &clients[1]);
        a.create_topic("mirrored", 2).await?;
        // a topic created through one gateway is there at once through both
        for c in &clients {
            let (s, body) = c.get("/v1/topics/mirrored").await?;
            ensure!(s == 200, "{}: describe right after create: {s} {body}", backend.name());
        }
        // the feed brings the new topic to both mirrors within milliseconds
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (before_a, before_b) = (controller_calls(a).await?, controller_calls(b).await?);
        let mut acked = Vec::new();
        for i in 0..100u32 {
            let body = json!({"records": [{"value": format!("v{i}")}]});
            let (s, answer) =
                a.post_json(&format!("/v1/topics/mirrored/partitions/{}/records", i % 2), &body).await?;
            ensure!(s == 200, "produce: {s} {answer}");
            let offset = answer["offsets"][0]["offset"].as_u64().context("offset")?;
            // read-your-writes through the other gateway, at once
            let (s, got) = b.fetch("mirrored", i % 2, &format!("offset={offset}&max_records=1")).await?;
            ensure!(
                s == 200 && got["records"][0]["value"] == format!("v{i}"),
                "{}: record {i} at {offset} through the other gateway: {s} {got}",
                backend.name()
            );
            acked.push((i % 2, offset));
        }
        let (after_a, mid_b) = (controller_calls(a).await?, controller_calls(b).await?);
        for call in ["describe_topic", "read_partition", "list_topics"] {
            ensure!(
                delta(&after_a, &before_a, call) == 0,
                "{}: 100 produces made {} {call} calls",
                backend.name(),
                delta(&after_a, &before_a, call)
            );
        }
        ensure!(
            delta(&after_a, &before_a, "commit_segments") >= 1,
            "the produces were committed through the counted client"
        );
        // once mirrored, fetching the same records costs no controller call
        for (p, offset) in &acked {
            let (s, got) = b.fetch("mirrored", *p, &format!("offset={offset}&max_records=1")).await?;
            ensure!(
                s == 200 && got["records"].as_array().is_some_and(|r| r.len() == 1),
                "refetch: {s} {got}"
            );
        }
        let after_b = controller_calls(b).await?;
        for call in ["describe_topic", "read_partition"] {
            ensure!(
                delta(&after_b, &mid_b, call) == 0,
                "{}: 100 fetches of mirrored data made {} {call} calls",
                backend.name(),
                delta(&after_b, &mid_b, call)
            );
        }
        eprintln!(
            "{}: controller calls for 100 produces {:?}, for 100 read-your-writes fetches {} read_partition",
            backend.name(),
            after_a
                .iter()
                .map(|(k, v)| (k.clone(), v - before_a.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect::<Vec<_>>(),
            delta(&mid_b, &before_b, "read_partition"),
        );
        // a deleted topic is gone at once through the gateway that deleted it
        let (s, _) = a.send(a.http.delete(format!("{}/v1/topics/mirrored", a.url))).await?;
        ensure!(s == 204, "delete: {s}");
        let (s, body) = a.get("/v1/topics/mirrored").await?;
        ensure!(s == 404, "{}: describe right after delete: {s} {body}", backend.name());
    }
    Ok(())
}
