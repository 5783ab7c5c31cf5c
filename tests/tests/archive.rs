//! The Parquet archive through the real binary, on the local disk and on
//! Garage: adversarial records are archived, served from Parquet exactly as
//! before (a fetch across the hot/cold boundary included), read back by
//! DuckDB and pyarrow identically; segments are collected once archived;
//! retention deletes whole files; a re-created topic never mixes
//! incarnations in query results; a compacted topic keeps the latest record
//! per key, at its offset, and drops tombstones after
//! `delete_retention_ms`; a fetch from inside a row group reads the pages
//! the page index names, not the whole group.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use base64::Engine;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};
use shale_tests::archive::{list, open_store, python, read_archive};
use shale_tests::{Backend, Client, Shale, unique};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A compactor that passes every 200 ms and collects garbage 1.5 s old.
const FAST: [&str; 4] = [
    "--flush-interval-ms=0",
    "--compact-interval-ms=200",
    "--gc-grace-ms=1500",
    "--max-record-bytes=2097152",
];

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Records no reader should get wrong, in the base64 encoding.
fn adversarial() -> Vec<Value> {
    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let binary: Vec<u8> = (0..=255).collect();
    vec![
        json!({"value": b64(b"no key")}),
        json!({"key": b64(b"k"), "value": ""}),
        json!({"key": b64(&[0, 255, 1]), "value": b64(&binary), "timestamp_ms": 0}),
        json!({"key": b64("ключ🔑".as_bytes()), "value": b64("värde ✓".as_bytes()),
               "headers": [{"key": "h", "value": b64(b"1")}, {"key": "h", "value": b64(b"2")},
                           {"key": "h", "value": ""}, {"key": "ü✓", "value": b64(&[0, 1])}]}),
        json!({"key": b64(b"k"), "value": null}),
        json!({"key": b64(b"big"), "value": b64(&big), "timestamp_ms": 4_102_444_800_000i64}),
        json!({"value": null, "timestamp_ms": -1000}),
    ]
}

/// Every record of the partition, as fetched in base64.
async fn fetch_all(c: &Client, topic: &str, partition: u32) -> anyhow::Result<Vec<Value>> {
    let mut records = Vec::new();
    let mut offset = 0;
    loop {
        let (s, body) =
            c.fetch(topic, partition, &format!("offset={offset}&encoding=base64&max_bytes=4194304")).await?;
        ensure!(s == 200, "fetch {topic}/{partition}@{offset}: {s} {body}");
        let batch = body["records"].as_array().cloned().unwrap_or_default();
        let next = body["next_offset"].as_u64().context("next_offset")?;
        // a compacted topic may answer no records but a next offset past a gap
        if batch.is_empty() && next == offset {
            return Ok(records);
        }
        offset = next;
        records.extend(batch);
    }
}

/// Waits until every listed partition's records are in archive files and
/// no segment object is left.
async fn archived(store: &Arc<dyn ObjectStore>, topic: &str, partitions: u32) -> anyhow::Result<Vec<String>> {
    for _ in 0..300 {
        let files = list(store.as_ref(), &format!("archive/topic={topic}")).await?;
        let segments = list(store.as_ref(), "segments").await?;
        let every = (0..partitions).all(|p| files.iter().any(|f| f.contains(&format!("/partition={p}/"))));
        if every && segments.is_empty() {
            return Ok(files);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{topic} was not archived (or its segments not collected) within 30 s")
}

/// What a reader should return for fetched records of `partition`.
fn as_rows(topic_id: u64, partition: u32, fetched: &[Value]) -> Vec<Value> {
    fetched
        .iter()
        .map(|r| {
            let headers: Vec<Value> = r["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| json!([h["key"], h["value"]]))
                .collect();
            json!({
                "topic_id": topic_id,
                "partition": partition,
                "offset": r["offset"],
                "timestamp_us": r["timestamp_ms"].as_i64().unwrap_or(0) * 1000,
                "key": r["key"],
                "value": r["value"],
                "headers": headers,
            })
        })
        .collect()
}

async fn produce(c: &Client, topic: &str, partition: u32, records: Vec<Value>) -> anyhow::Result<()> {
    let (s, body) = c
        .post_json(
            &format!("/v1/topics/{topic}/partitions/{partition}/records"),
            &json!({"encoding": "base64", "records": records}),
        )
        .await?;
    ensure!(s == 200, "produce: {s} {body}");
    Ok(())
}

async fn create(c: &Client, topic: &str, partitions: u32, config: Value) -> anyhow::Result<u64> {
    let (s, body) = c
        .post_json("/v1/topics", &json!({"name": topic, "partitions": partitions, "config": config}))
        .await?;
    ensure!(s == 201, "create: {s} {body}");
    body["id"].as_u64().context("topic id")
}

async fn readers_agree(
    backend: &Backend,
    dir: &Path,
    prefix: &str,
    topic: &str,
    want: &[Value],
) -> anyhow::Result<()> {
    let Some(python) = python() else { return Ok(()) };
    for engine in ["duckdb", "pyarrow"] {
        let rows = read_archive(&python, engine, backend, dir, prefix, topic).await?;
        ensure!(rows.len() == want.len(), "{engine}: {} rows, {} records", rows.len(), want.len());
        for (got, want) in rows.iter().zip(want) {
            ensure!(got == want, "{engine} ({}):\n got {got}\nwant {want}", backend.name());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_records_are_served_and_queried_the_same_from_the_archive() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("archive");
        let shale = Shale::start(dir.path(), &backend, &prefix, &FAST).await?;
        let c = shale.client();
        let id = create(&c, "adversarial", 2, json!({"archive_after_ms": 1000})).await?;
        for (i, record) in adversarial().into_iter().enumerate() {
            produce(&c, "adversarial", (i % 2) as u32, vec![record.clone(), record]).await?;
        }
        let hot = [fetch_all(&c, "adversarial", 0).await?, fetch_all(&c, "adversarial", 1).await?];
        ensure!(hot[0].len() == 8 && hot[1].len() == 6, "{} and {} records", hot[0].len(), hot[1].len());

        let store = open_store(&backend, dir.path(), &prefix)?;
        let files = archived(&store, "adversarial", 2).await.with_context(|| shale.log())?;
        // one file per partition, or more when the produces spanned more than half archive_after_ms
        for p in 0..2 {
            let first = format!("partition={p}/00000000000000000000-");
            ensure!(files.iter().any(|f| f.contains(&first)), "partition {p} starts at offset 0: {files:?}");
        }
        ensure!(files.iter().all(|f| f.ends_with(".parquet")), "{files:?}");
        for p in 0..2u32 {
            let cold = fetch_all(&c, "adversarial", p).await?;
            ensure!(
                cold == hot[p as usize],
                "{}: partition {p} reads differently from the archive",
                backend.name()
            );
        }
        let want: Vec<Value> = (0..2).flat_map(|p| as_rows(id, p, &hot[p as usize])).collect();
        readers_agree(&backend, dir.path(), &prefix, "adversarial", &want).await?;

        // across the hot/cold boundary: the last archived records, then new ones
        produce(&c, "adversarial", 0, vec![json!({"value": b64(b"hot 1")}), json!({"value": b64(b"hot 2")})])
            .await?;
        let (s, across) = c.fetch("adversarial", 0, "offset=6&max_records=4&encoding=base64").await?;
        ensure!(s == 200, "{across}");
        let values: Vec<&Value> =
            across["records"].as_array().into_iter().flatten().map(|r| &r["value"]).collect();
        let want = [&hot[0][6]["value"], &hot[0][7]["value"], &json!(b64(b"hot 1")), &json!(b64(b"hot 2"))];
        ensure!(values == want, "{}: across the boundary {values:?}", backend.name());
        ensure!(across["next_offset"] == 10 && across["high_watermark"] == 10, "{across}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_archive_files() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("archive-retention");
        let shale = Shale::start(dir.path(), &backend, &prefix, &FAST).await?;
        let c = shale.client();
        create(&c, "aging", 1, json!({"archive_after_ms": 500})).await?;
        produce(&c, "aging", 0, vec![json!({"value": b64(b"old")}); 3]).await?;
        let store = open_store(&backend, dir.path(), &prefix)?;
        archived(&store, "aging", 1).await?;
        let (s, body) = c
            .send(
                c.http
                    .patch(format!("{}/v1/topics/aging", c.url))
                    .json(&json!({"config": {"retention_ms": 1}})),
            )
            .await?;
        ensure!(s == 200, "{body}");
        let mut left = Vec::new();
        for _ in 0..100 {
            left = list(store.as_ref(), "archive").await?;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(left.is_empty(), "{}: files past retention stay: {left:?}", backend.name());
        let (s, gone) = c.fetch("aging", 0, "offset=0").await?;
        ensure!(s == 416 && gone["log_start_offset"] == 3, "{s} {gone}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_never_mixes_incarnations() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("archive-recreate");
        let shale = Shale::start(dir.path(), &backend, &prefix, &FAST).await?;
        let c = shale.client();
        let store = open_store(&backend, dir.path(), &prefix)?;
        let first = create(&c, "again", 1, json!({"archive_after_ms": 300})).await?;
        produce(&c, "again", 0, vec![json!({"value": b64(b"first")}); 4]).await?;
        archived(&store, "again", 1).await?;
        let (s, _) = c.send(c.http.delete(format!("{}/v1/topics/again", c.url))).await?;
        ensure!(s == 204, "delete answered {s}");
        let second = create(&c, "again", 1, json!({"archive_after_ms": 300})).await?;
        ensure!(second != first, "a new incarnation");
        produce(&c, "again", 0, vec![json!({"value": b64(b"second")}); 2]).await?;
        // the same offsets, 0 and 1, exist in both incarnations; readers see one or the other
        let Some(python) = python() else {
            archived(&store, "again", 1).await?;
            continue;
        };
        let mut settled = false;
        for _ in 0..100 {
            let rows = read_archive(&python, "duckdb", &backend, dir.path(), &prefix, "again")
                .await
                .unwrap_or_default();
            let ids: std::collections::BTreeSet<u64> =
                rows.iter().filter_map(|r| r["topic_id"].as_u64()).collect();
            ensure!(ids.len() <= 1, "{}: incarnations mixed: {rows:?}", backend.name());
            let values: Vec<&Value> = rows.iter().map(|r| &r["value"]).collect();
            if ids.contains(&first) {
                ensure!(values == vec![&json!(b64(b"first")); 4], "{values:?}");
            }
            if ids.contains(&second) {
                ensure!(values == vec![&json!(b64(b"second")); 2], "{values:?}");
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(settled, "{}: the new incarnation was never archived\n{}", backend.name(), shale.log());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_record_per_key_and_drops_old_tombstones() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("archive-compact");
        let shale = Shale::start(dir.path(), &backend, &prefix, &FAST).await?;
        let c = shale.client();
        let config =
            json!({"archive_after_ms": 300, "cleanup_policy": "compact", "delete_retention_ms": 15000});
        let id = create(&c, "latest", 1, config).await?;
        let (s, refused) = c
            .post_json(
                "/v1/topics/latest/records",
                &json!({"records": [{"key": "k", "value": "v"}, {"value": "x"}]}),
            )
            .await?;
        ensure!(
            s == 400 && refused["error_code"] == "invalid_request",
            "a record without a key: {s} {refused}"
        );
        let kv = |k: &str, v: Option<&str>| json!({"key": b64(k.as_bytes()), "value": v.map(|v| b64(v.as_bytes()))});
        // offsets 0-4 and 5-9: every key twice; then k3 deleted (10), k1 again (11), in three produces
        let first: Vec<Value> = (0..5).map(|k| kv(&format!("k{k}"), Some("v1"))).collect();
        let second: Vec<Value> = (0..5).map(|k| kv(&format!("k{k}"), Some("v2"))).collect();
        produce(&c, "latest", 0, first).await?;
        produce(&c, "latest", 0, second).await?;
        produce(&c, "latest", 0, vec![kv("k3", None), kv("k1", Some("v3"))]).await?;
        let (s, info) = c.get("/v1/topics/latest").await?;
        ensure!(s == 200 && info["partitions"][0]["high_watermark"] == 12, "{s} {info}");

        let want = |offsets: &[u64]| -> Vec<(u64, Value, Value)> {
            let all = [
                ("k0", "v1"),
                ("k1", "v1"),
                ("k2", "v1"),
                ("k3", "v1"),
                ("k4", "v1"),
                ("k0", "v2"),
                ("k1", "v2"),
                ("k2", "v2"),
                ("k3", "v2"),
                ("k4", "v2"),
            ];
            offsets
                .iter()
                .map(|o| match o {
                    10 => (10, json!(b64(b"k3")), Value::Null),
                    11 => (11, json!(b64(b"k1")), json!(b64(b"v3"))),
                    o => {
                        let (k, v) = all[*o as usize];
                        (*o, json!(b64(k.as_bytes())), json!(b64(v.as_bytes())))
                    }
                })
                .collect()
        };
        let seen = |records: &[Value]| -> Vec<(u64, Value, Value)> {
            records
                .iter()
                .map(|r| (r["offset"].as_u64().unwrap_or(u64::MAX), r["key"].clone(), r["value"].clone()))
                .collect()
        };
        // the latest per key, the tombstone kept, offsets unchanged
        let read_until = async |wanted: &[(u64, Value, Value)]| -> anyhow::Result<Vec<(u64, Value, Value)>> {
            let mut got = Vec::new();
            // up to 30 s: the tombstone stays 15 s
            for _ in 0..300 {
                got = seen(&fetch_all(&c, "latest", 0).await?);
                if got == wanted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(got)
        };
        let cleaned = want(&[5, 7, 9, 10, 11]);
        let got = read_until(&cleaned).await?;
        ensure!(got == cleaned, "{}: after cleaning {got:?}\n{}", backend.name(), shale.log());
        let (s, gap) = c.fetch("latest", 0, "offset=1&max_records=1&encoding=base64").await?;
        ensure!(s == 200, "{gap}");
        ensure!(
            gap["records"][0]["offset"] == 5 && gap["next_offset"] == 7,
            "a fetch in a gap skips cleaned offsets: {gap}"
        );
        let (s, gap) = c.fetch("latest", 0, "offset=6&encoding=base64").await?;
        ensure!(s == 200 && gap["records"][0]["offset"] == 7, "a fetch in a gap: {gap}");
        let store = open_store(&backend, dir.path(), &prefix)?;
        let files = list(store.as_ref(), "archive/topic=latest").await?;
        ensure!(
            files.iter().all(|f| f.contains(".c")),
            "cleaned files are rewritten under new names: {files:?}"
        );

        // once delete_retention_ms has passed, the tombstone goes too
        let gone = want(&[5, 7, 9, 11]);
        let got = read_until(&gone).await?;
        ensure!(got == gone, "{}: after the tombstone's retention {got:?}\n{}", backend.name(), shale.log());
        // the readers see the cleaned files as fetches do (compared once nothing is due any more:
        // before, the tombstone may go between the fetch and a reader's query)
        let fetched = fetch_all(&c, "latest", 0).await?;
        readers_agree(&backend, dir.path(), &prefix, "latest", &as_rows(id, 0, &fetched)).await?;
        let (s, info) = c.get("/v1/topics/latest").await?;
        ensure!(s == 200 && info["partitions"][0]["high_watermark"] == 12, "offsets never change: {info}");
    }
    Ok(())
}

/// The `shale_store_read_bytes_total` counter of a `shale dev`.
async fn store_read_bytes(c: &Client) -> anyhow::Result<u64> {
    let text = c.http.get(format!("{}/metrics", c.url)).send().await?.error_for_status()?.text().await?;
    let line =
        text.lines().find(|l| l.starts_with("shale_store_read_bytes_total ")).context("no read bytes")?;
    line.rsplit(' ').next().and_then(|n| n.parse().ok()).context("read bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_inside_a_row_group_reads_only_the_pages_it_needs() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("archive-pages");
        let shale = Shale::start(dir.path(), &backend, &prefix, &FAST).await?;
        let c = shale.client();
        create(&c, "paged", 1, json!({"archive_after_ms": 300})).await?;
        // 5000 records of 200 incompressible bytes in one produce: one file, one row group, five pages
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let values: Vec<String> = (0..5000)
            .map(|_| {
                let bytes: Vec<u8> = (0..200)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state as u8
                    })
                    .collect();
                b64(&bytes)
            })
            .collect();
        produce(&c, "paged", 0, values.iter().map(|v| json!({"value": v})).collect()).await?;
        let store = open_store(&backend, dir.path(), &prefix)?;
        let files = archived(&store, "paged", 1).await.with_context(|| shale.log())?;
        ensure!(files.len() == 1, "one file: {files:?}");
        let len = store.head(&object_store::path::Path::from(files[0].as_str())).await?.size;

        let before = store_read_bytes(&c).await?;
        let (s, one) = c.fetch("paged", 0, "offset=4500&max_records=1&encoding=base64").await?;
        ensure!(s == 200 && one["records"][0]["value"] == json!(values[4500]), "{s} {one}");
        let read = store_read_bytes(&c).await? - before;
        ensure!(
            read < len / 2,
            "{}: a fetch of one record read {read} of the file's {len} bytes (footer and pages only expected)",
            backend.name()
        );
        let (s, rest) = c.fetch("paged", 0, "offset=4000&max_records=1000&encoding=base64").await?;
        ensure!(s == 200, "{rest}");
        let got: Vec<&Value> =
            rest["records"].as_array().into_iter().flatten().map(|r| &r["value"]).collect();
        let want: Vec<Value> = values[4000..].iter().map(|v| json!(v)).collect();
        ensure!(
            got.len() == 1000 && got.iter().zip(&want).all(|(g, w)| *g == w),
            "records from a skipped page on"
        );
        ensure!(
            rest["records"][0]["offset"] == 4000 && rest["next_offset"] == 5000,
            "{}",
            rest["next_offset"]
        );
    }
    Ok(())
}

/// The offset for a time, asked of a partition's hot segments and again
/// once they are archived: the same answers.
async fn offsets_for(c: &Client, topic: &str, times: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for t in times {
        let (s, body) = c.get(&format!("/v1/topics/{topic}/partitions/0/offsets?timestamp_ms={t}")).await?;
        ensure!(s == 200, "offsets at {t}: {s} {body}");
        out.push(json!([body["offset"], body["timestamp_ms"]]));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_by_time_are_the_same_from_segments_and_from_the_archive() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let prefix = unique("times");
        let shale = Shale::start(dir.path(), &backend, &prefix, &FAST).await?;
        let c = shale.client();
        create(&c, "timed", 1, json!({"archive_after_ms": 500})).await?;
        // three requests of 10 records, 1 s apart in record time; not in order inside
        let base = 1_800_000_000_000i64;
        for batch in 0..3i64 {
            let records = (0..10i64)
                .map(|i| json!({"value": b64(b"v"), "timestamp_ms": base + batch * 1000 + (i * 7) % 10}))
                .collect();
            produce(&c, "timed", 0, records).await?;
        }
        let times = [
            "0",
            "1800000000003",
            "1800000000999",
            "1800000001000",
            "1800000002009",
            "1800000002010",
            "earliest",
            "latest",
        ];
        let expected = json!([
            [0, base],
            [1, base + 7],
            [10, base + 1000],
            [10, base + 1000],
            [27, base + 2009],
            [30, null],
            [0, null],
            [30, null]
        ]);
        let hot = offsets_for(&c, "timed", &times).await?;
        ensure!(json!(hot) == expected, "from segments: {hot:?}, expected {expected}");
        let store = open_store(&backend, dir.path(), &prefix)?;
        archived(&store, "timed", 1).await.with_context(|| shale.log())?;
        let cold = offsets_for(&c, "timed", &times).await?;
        ensure!(cold == hot, "from the archive {cold:?}, from segments {hot:?}");
        let (s, body) = c.get("/v1/topics/timed/partitions/0/offsets?timestamp_ms=yesterday").await?;
        ensure!(s == 400 && body["error_code"] == "invalid_offset", "{s} {body}");
    }
    Ok(())
}
