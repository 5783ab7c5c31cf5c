//! Server-sent event streams and group commits against `shale dev`: resume
//! from `Last-Event-ID`, a slow reader holding bounded memory, the cap on
//! open streams, and commits from stale epochs refused.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use shale_tests::{Backend, Client, Shale, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads an event stream until `events` events (not comments) have come.
async fn read_events(
    client: &Client,
    path: &str,
    last_event_id: Option<&str>,
    events: usize,
) -> anyhow::Result<Vec<(String, Value)>> {
    let mut request = client.http.get(format!("{}{path}", client.url)).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request.send().await?;
    ensure!(response.status() == 200, "stream {path}: {}", response.status());
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < events {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .context("no event in 20 s")??;
        let Some(chunk) = chunk else { break };
        text.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let field = |name: &str| event.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                out.push((id, serde_json::from_str(&data)?));
            }
        }
    }
    Ok(out)
}

async fn produce(c: &Client, topic: &str, partition: u32, n: usize, value: &str) -> anyhow::Result<()> {
    let records: Vec<Value> = (0..n).map(|i| json!({"value": format!("{value}{i}")})).collect();
    let (s, body) = c
        .post_json(
            &format!("/v1/topics/{topic}/partitions/{partition}/records"),
            &json!({"records": records}),
        )
        .await?;
    ensure!(s == 200, "produce: {s} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resume_exactly_from_the_last_event_id() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale = Shale::start(dir.path(), &backend, &unique("sse"), &["--flush-interval-ms=5"]).await?;
        let c = shale.client();
        c.create_topic("feed", 2).await?;
        for p in 0..2 {
            produce(&c, "feed", p, 50, "r").await?;
        }
        let path = "/v1/topics/feed/partitions/0/records?offset=0&max_records=7";
        let first = read_events(&c, path, None, 2).await?;
        ensure!(first[0].0 == "7" && first[1].0 == "14", "ids are next offsets: {first:?}");
        let resumed = read_events(&c, path, Some(&first[1].0), 1).await?;
        let offsets: Vec<u64> = resumed[0].1["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["offset"].as_u64())
            .collect();
        ensure!(offsets == (14..21).collect::<Vec<u64>>(), "resumed at {offsets:?}");

        // a member's stream: the id is a cursor over its partitions
        let (s, body) = c
            .send(
                c.http
                    .put(format!("{}/v1/groups/readers/members/r1", c.url))
                    .json(&json!({"topics": ["feed"]})),
            )
            .await?;
        ensure!(s == 200, "join: {s} {body}");
        let member = "/v1/groups/readers/members/r1/records?max_records=10";
        let events = read_events(&c, member, None, 2).await?;
        let cursor = events[1].0.clone();
        ensure!(cursor == events[1].1["cursor"], "the event id is the cursor: {events:?}");
        let at: std::collections::BTreeMap<u64, u64> = cursor
            .split(',')
            .filter_map(|p| {
                let f: Vec<&str> = p.split(':').collect();
                Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
            })
            .collect();
        let again = read_events(&c, member, Some(&cursor), 1).await?;
        for r in again[0].1["records"].as_array().into_iter().flatten() {
            let (p, o) =
                (r["partition"].as_u64().context("partition")?, r["offset"].as_u64().context("offset")?);
            ensure!(o >= at[&p], "partition {p} went back to {o} from the cursor's {}", at[&p]);
        }
        let firsts: Vec<(u64, u64)> = at
            .iter()
            .filter_map(|(p, o)| {
                let first = again[0].1["records"].as_array()?.iter().find(|r| r["partition"] == *p)?;
                Some((*o, first["offset"].as_u64()?))
            })
            .collect();
        ensure!(
            !firsts.is_empty() && firsts.iter().all(|(want, got)| want == got),
            "resumed exactly at the cursor: {firsts:?}"
        );
    }
    Ok(())
}

/// One raw SSE request whose answer is then not read.
async fn stalled_stream(url: &str, path: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let addr = url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 512];
    let n = socket.read(&mut head).await?;
    ensure!(std::str::from_utf8(&head[..n]).unwrap_or("").starts_with("HTTP/1.1 200"), "stream refused");
    Ok(socket)
}

async fn metric(c: &Client, name: &str) -> anyhow::Result<f64> {
    let text = c.http.get(format!("{}/metrics", c.url)).send().await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .with_context(|| format!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_readers_hold_bounded_memory_and_streams_are_capped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let flags = ["--flush-interval-ms=20", "--cache-bytes=1048576", "--max-streams=8"];
    let shale = Shale::start(dir.path(), &Backend::Local, &unique("slow"), &flags).await?;
    let c = shale.client();
    c.create_topic("big", 1).await?;
    let value = "x".repeat(16 << 10);
    for _ in 0..32 {
        produce(&c, "big", 0, 64, &value).await?; // 1 MiB a request, 32 MiB in all
    }
    let before = metric(&c, "shale_process_resident_bytes").await?;
    let path = "/v1/topics/big/partitions/0/records?offset=0&max_bytes=1048576";
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(stalled_stream(&shale.url, path).await?);
    }
    let (s, body) =
        c.send(c.http.get(format!("{}{path}", c.url)).header("accept", "text/event-stream")).await?;
    ensure!(s == 429 && body["error_code"] == "overloaded", "a ninth stream: {s} {body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = metric(&c, "shale_process_resident_bytes").await?;
    let fetched = metric(&c, "shale_fetched_bytes_total").await?;
    // unbounded, each stream would have read all 32 MiB (256 MiB in all)
    ensure!(fetched < (64 << 20) as f64, "stalled streams read {fetched} bytes ahead of their readers");
    let grown = after - before;
    ensure!(grown < (48 << 20) as f64, "eight stalled streams grew the gateway by {grown} bytes");
    eprintln!("8 stalled streams: {} MiB read, RSS +{} MiB", fetched / 1048576.0, grown / 1048576.0);
    // a reader that reads gets everything
    let mut socket = stalled.pop().context("a stream")?;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < (32 << 20) {
        let n = tokio::time::timeout(Duration::from_secs(20), socket.read(&mut buf))
            .await
            .context("stream stalled")??;
        ensure!(n > 0, "the stream ended after {got} bytes");
        got += n;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_from_stale_epochs_or_for_partitions_not_owned_change_nothing() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale = Shale::start(dir.path(), &backend, &unique("stale"), &["--flush-interval-ms=5"]).await?;
        let c = shale.client();
        c.create_topic("work", 2).await?;
        for p in 0..2 {
            produce(&c, "work", p, 10, "w").await?;
        }
        let join = |m: &str, epoch: Option<u64>| {
            let body = json!({"topics": ["work"], "member_epoch": epoch});
            c.http.put(format!("{}/v1/groups/g/members/{m}", c.url)).json(&body)
        };
        let (_, a1) = c.send(join("a", None)).await?;
        let old = a1["member_epoch"].as_u64().context("epoch")?;
        let commit = |member: &str, epoch: u64, partition: u32, offset: u64| {
            let offsets = json!([{"topic": "work", "partition": partition, "offset": offset}]);
            json!({"member_id": member, "member_epoch": epoch, "offsets": offsets})
        };
        let (s, body) = c.post_json("/v1/groups/g/offsets", &commit("a", old, 0, 3)).await?;
        ensure!(s == 204, "a current commit: {s} {body}");
        let (_, b) = c.send(join("b", None)).await?; // a must now give a partition up: its epoch moves
        // presenting the old epoch: a has not acted on the revocation yet
        let (_, a2) = c.send(join("a", Some(old))).await?;
        let new = a2["member_epoch"].as_u64().context("epoch")?;
        ensure!(new > old && a2["revoke"].as_array().is_some_and(|r| r.len() == 1), "a revokes one: {a2}");
        let (s, body) = c.post_json("/v1/groups/g/offsets", &commit("a", old, 0, 9)).await?;
        ensure!(s == 409 && body["error_code"] == "stale_member", "a stale epoch: {s} {body}");
        let b_epoch = b["member_epoch"].as_u64().context("epoch")?;
        let (s, body) = c.post_json("/v1/groups/g/offsets", &commit("b", b_epoch, 0, 9)).await?;
        ensure!(s == 409 && body["error_code"] == "stale_member", "not owned: {s} {body}");
        let manual = json!({"offsets": [{"topic": "work", "partition": 0, "offset": 9}]});
        let (s, body) = c.post_json("/v1/groups/g/offsets", &manual).await?;
        ensure!(s == 409 && body["error_code"] == "group_not_empty", "manual with members: {s} {body}");
        let (s, body) = c.post_json("/v1/groups/g/offsets/reset", &json!({"to": "latest"})).await?;
        ensure!(s == 409 && body["error_code"] == "group_not_empty", "reset with members: {s} {body}");
        let (_, offsets) = c.get("/v1/groups/g/offsets").await?;
        let stored: Vec<(u64, u64)> = offsets["offsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| Some((o["partition"].as_u64()?, o["offset"].as_u64()?)))
            .collect();
        ensure!(stored == vec![(0, 3)], "only the current commit counts: {stored:?}");
        let (s, _) = c.post_json("/v1/groups/g/offsets", &commit("a", new, 0, 11)).await?;
        ensure!(s == 400, "past the high watermark");
        for m in ["a", "b"] {
            let (s, body) = c.send(c.http.delete(format!("{}/v1/groups/g/members/{m}", c.url))).await?;
            ensure!(s == 204, "leave {m}: {s} {body}");
        }
        let (s, body) = c.post_json("/v1/groups/g/offsets/reset", &json!({"to": "earliest"})).await?;
        ensure!(s == 200 && body["offsets"].as_array().map_or(0, Vec::len) == 2, "reset: {s} {body}");
        let (s, body) = c.get("/v1/groups/g").await?;
        ensure!(s == 200 && body["state"] == "empty" && body["total_lag"] == 20, "describe: {s} {body}");
        let (s, _) = c.send(c.http.delete(format!("{}/v1/groups/g", c.url))).await?;
        ensure!(s == 204, "delete");
        let (s, body) = c.get("/v1/groups/g").await?;
        ensure!(s == 404 && body["error_code"] == "group_not_found", "{s} {body}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_nothing_assigned_long_polls_instead_of_spinning() -> anyhow::Result<()> {
    // the behaviour is the gateway's, whatever the store
    let dir = tempfile::tempdir()?;
    let shale = Shale::start(dir.path(), &Backend::Local, &unique("idle"), &[]).await?;
    let c = shale.client();
    c.create_topic("one", 1).await?;
    for m in ["a", "b"] {
        let body = json!({"topics": ["one"], "session_timeout_ms": 30000});
        let (s, answer) =
            c.send(c.http.put(format!("{}/v1/groups/idle/members/{m}", c.url)).json(&body)).await?;
        ensure!(s == 200, "join {m}: {s} {answer}");
    }
    // one partition, two members: b holds nothing, and its read waits its wait_ms
    let started = std::time::Instant::now();
    let (s, page) = c.get("/v1/groups/idle/members/b/records?wait_ms=400").await?;
    let took = started.elapsed();
    ensure!(s == 200 && page["records"].as_array().is_some_and(Vec::is_empty), "{s} {page}");
    ensure!(page["assignment"].as_array().is_some_and(Vec::is_empty), "b holds nothing: {page}");
    ensure!(took >= std::time::Duration::from_millis(350), "answered after {took:?}, not after its wait");
    Ok(())
}
