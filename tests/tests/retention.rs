//! Retention through the real binary: a topic's `retention_ms` and
//! `retention_bytes` advance its log start offset (the controller leader
//! proposes it within about a second), and a fetch below it answers 416 with
//! the new `log_start_offset`. Objects stay until garbage collection (not
//! built yet) finds them unreferenced.

use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use shale_tests::{Backend, Client, Shale, unique};

/// The log start offset of partition 0, once it reaches at least `at_least`.
async fn log_start_reaches(c: &Client, topic: &str, at_least: u64) -> anyhow::Result<u64> {
    let mut seen = 0;
    for _ in 0..100 {
        let (_, info) = c.get(&format!("/v1/topics/{topic}")).await?;
        seen = info["partitions"][0]["log_start_offset"].as_u64().unwrap_or(0);
        if seen >= at_least {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("log start of {topic} stayed at {seen}, expected at least {at_least}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_by_size_advances_the_log_start() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale =
            Shale::start(dir.path(), &backend, &unique("retention"), &["--flush-interval-ms=0"]).await?;
        let c = shale.client();
        for (name, config) in
            [("aging", json!({"retention_ms": 1500})), ("sized", json!({"retention_bytes": 1}))]
        {
            let (s, body) =
                c.post_json("/v1/topics", &json!({"name": name, "partitions": 1, "config": config})).await?;
            ensure!(s == 201, "{body}");
        }
        // one chunk per request (flush interval 0)
        for i in 0..3 {
            for topic in ["aging", "sized"] {
                let (s, body) = c
                    .post_json(
                        &format!("/v1/topics/{topic}/records"),
                        &json!({"records": [{"value": format!("r{i}")}]}),
                    )
                    .await?;
                ensure!(s == 200, "{body}");
            }
        }
        let (s, early) = c.fetch("aging", 0, "offset=0").await?;
        ensure!(
            s == 200 && early["records"].as_array().map(Vec::len) == Some(3),
            "young records are kept: {early}"
        );

        // by size: older chunks go while what is left still reaches the limit, so the newest stays
        let start = log_start_reaches(&c, "sized", 2).await?;
        ensure!(start == 2, "{}: the newest chunk is kept, got log start {start}", backend.name());
        let (s, newest) = c.fetch("sized", 0, "offset=earliest").await?;
        ensure!(s == 200 && newest["records"][0]["value"] == "r2", "{newest}");

        // by time: all three age out
        let start = log_start_reaches(&c, "aging", 3).await.context(backend.name())?;
        ensure!(start == 3, "log start {start}");
        let (s, gone) = c.fetch("aging", 0, "offset=0").await?;
        ensure!(s == 416 && gone["error_code"] == "offset_out_of_range", "{s} {gone}");
        ensure!(gone["log_start_offset"] == 3 && gone["high_watermark"] == 3, "{gone}");
        let (s, acked) =
            c.post_json("/v1/topics/aging/records", &json!({"records": [{"value": "later"}]})).await?;
        ensure!(s == 200 && acked["offsets"][0]["offset"] == 3, "offsets go on: {acked}");
        let (s, later): (u16, Value) = c.fetch("aging", 0, "offset=earliest").await?;
        ensure!(s == 200 && later["records"][0]["value"] == "later", "{later}");
    }
    Ok(())
}
