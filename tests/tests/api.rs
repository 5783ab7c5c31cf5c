//! Every error case answers the JSON error shape with the right status, and
//! bodies in every encoding round-trip.

use std::time::Duration;

use anyhow::ensure;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use shale_core::Header;
use shale_core::wire::{self, ProduceRecord};
use shale_tests::process::Answer;
use shale_tests::{Backend, Shale, unique};

/// Checks the status, the code and the shape of an error answer.
fn expect_error((status, body): &Answer, want_status: u16, want_code: &str) -> anyhow::Result<()> {
    ensure!(*status == want_status, "status {status}, want {want_status}: {body}");
    ensure!(body["error_code"] == want_code, "code {}, want {want_code}: {body}", body["error_code"]);
    ensure!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "message: {body}");
    ensure!(body["retryable"].is_boolean(), "retryable: {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_case_answers_json() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let limits = ["--max-record-bytes=1024", "--max-request-bytes=65536", "--buffer-bytes=1048576"];
        let shale = Shale::start(dir.path(), &backend, &unique("errors"), &limits).await?;
        let c = shale.client();
        c.create_topic("t", 2).await?;
        let produce = |v: Value| json!({"records": [v]});

        // names
        expect_error(
            &c.post_json("/v1/topics", &json!({"name": "bad/name"})).await?,
            400,
            "invalid_topic_name",
        )?;
        expect_error(
            &c.post_json("/v1/topics", &json!({"name": "x".repeat(250)})).await?,
            400,
            "invalid_topic_name",
        )?;
        expect_error(&c.post_json("/v1/topics", &json!({"name": ".."})).await?, 400, "invalid_topic_name")?;
        expect_error(&c.get("/v1/topics/bad$name").await?, 400, "invalid_topic_name")?;
        // exists, unknown topic, unknown partition
        expect_error(
            &c.post_json("/v1/topics", &json!({"name": "t", "partitions": 2})).await?,
            409,
            "topic_exists",
        )?;
        expect_error(&c.get("/v1/topics/nope").await?, 404, "topic_not_found")?;
        expect_error(
            &c.post_json("/v1/topics/nope/records", &produce(json!({"value": "v"}))).await?,
            404,
            "topic_not_found",
        )?;
        expect_error(&c.fetch("nope", 0, "offset=0").await?, 404, "topic_not_found")?;
        expect_error(
            &c.post_json("/v1/topics/t/records", &produce(json!({"value": "v", "partition": 9}))).await?,
            404,
            "partition_not_found",
        )?;
        expect_error(
            &c.post_json("/v1/topics/t/partitions/2/records", &produce(json!({"value": "v"}))).await?,
            404,
            "partition_not_found",
        )?;
        expect_error(&c.fetch("t", 7, "offset=0").await?, 404, "partition_not_found")?;
        // sizes: the message states the limit
        let big = c.post_json("/v1/topics/t/records", &produce(json!({"value": "x".repeat(2000)}))).await?;
        expect_error(&big, 413, "record_too_large")?;
        ensure!(big.1["message"].as_str().is_some_and(|m| m.contains("1024")), "{}", big.1);
        let many: Vec<Value> = (0..100).map(|_| json!({"value": "y".repeat(1000)})).collect();
        let huge = c.post_json("/v1/topics/t/records", &json!({"records": many})).await?;
        expect_error(&huge, 413, "request_too_large")?;
        ensure!(huge.1["message"].as_str().is_some_and(|m| m.contains("65536")), "{}", huge.1);
        // malformed bodies and content types
        let raw = |body: &'static str, ct: &'static str| {
            c.http.post(format!("{}/v1/topics/t/records", c.url)).header("content-type", ct).body(body)
        };
        expect_error(&c.send(raw("{\"records\": [", "application/json")).await?, 400, "invalid_request")?;
        expect_error(
            &c.send(raw("{\"records\": [{\"nope\": 1}]}", "application/json")).await?,
            400,
            "invalid_request",
        )?;
        expect_error(&c.send(raw("{\"records\": []}", "application/json")).await?, 400, "invalid_request")?;
        expect_error(&c.send(raw("value=1", "text/plain")).await?, 400, "invalid_content_type")?;
        expect_error(&c.send(raw("SHR1\u{1}", wire::CONTENT_TYPE)).await?, 400, "invalid_request")?;
        expect_error(
            &c.post_json(
                "/v1/topics/t/records",
                &json!({"encoding": "base64", "records": [{"value": "***"}]}),
            )
            .await?,
            400,
            "invalid_encoding",
        )?;
        // offsets
        let beyond = c.fetch("t", 0, "offset=5").await?;
        expect_error(&beyond, 416, "offset_out_of_range")?;
        ensure!(beyond.1["high_watermark"] == 0, "416 carries the high watermark: {}", beyond.1);
        expect_error(&c.fetch("t", 0, "offset=abc").await?, 400, "invalid_offset")?;
        expect_error(&c.fetch("t", 0, "offset=-1").await?, 400, "invalid_offset")?;
        expect_error(&c.get("/v1/topics/t/partitions/x/records").await?, 400, "invalid_request")?;
        expect_error(&c.fetch("t", 0, "max_records=lots").await?, 400, "invalid_request")?;
        // routes
        expect_error(&c.get("/v2/nothing").await?, 404, "not_found")?;
        // nothing above wrote a record
        let (status, info) = c.get("/v1/topics/t").await?;
        ensure!(
            status == 200
                && info["partitions"][0]["high_watermark"] == 0
                && info["partitions"][1]["high_watermark"] == 0,
            "{info}"
        );
        // the one gateway of `shale dev` leads every partition, at epoch 1
        for p in info["partitions"].as_array().into_iter().flatten() {
            ensure!(p["leader"] == c.url.as_str() && p["leader_epoch"] == 1, "leadership: {info}");
        }
        // delete
        let (status, _) = c.send(c.http.delete(format!("{}/v1/topics/t", c.url))).await?;
        ensure!(status == 204);
        expect_error(&c.get("/v1/topics/t").await?, 404, "topic_not_found")?;
        expect_error(
            &c.send(c.http.delete(format!("{}/v1/topics/t", c.url))).await?,
            404,
            "topic_not_found",
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_429_with_retry_after() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let slow = [
        "--buffer-bytes=8192",
        "--max-request-bytes=8192",
        "--max-record-bytes=8192",
        "--flush-interval-ms=3000",
        "--flush-bytes=1000000",
    ];
    let shale = Shale::start(dir.path(), &Backend::Local, "overload", &slow).await?;
    let c = shale.client();
    c.create_topic("t", 1).await?;
    // a flush leaves at once when the last is an interval old; right after
    // this one, the next batch waits the 3 s interval, holding its bytes
    let (status, _) = c.post_json("/v1/topics/t/records", &json!({"records": [{"value": "a"}]})).await?;
    ensure!(status == 200, "the first produce is flushed at once");
    let body = json!({"records": [{"value": "z".repeat(6000)}]});
    let first = {
        let (c, body) = (c.clone(), body.clone());
        tokio::spawn(async move { c.post_json("/v1/topics/t/records", &body).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = c.http.post(format!("{}/v1/topics/t/records", c.url)).json(&body).send().await?;
    ensure!(response.status() == 429, "second request while the buffer is full: {}", response.status());
    ensure!(response.headers().contains_key("retry-after"), "429 carries Retry-After");
    let refused: Value = response.json().await?;
    ensure!(refused["error_code"] == "overloaded" && refused["retryable"] == true, "{refused}");
    let (status, acked) = first.await??;
    ensure!(status == 200, "the buffered request is still committed: {acked}");
    let (status, _) = c.post_json("/v1/topics/t/records", &body).await?;
    ensure!(status == 200, "room again once the first was acknowledged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_and_the_binary_body_round_trip() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale =
            Shale::start(dir.path(), &backend, &unique("encodings"), &["--flush-interval-ms=5"]).await?;
        let c = shale.client();
        c.create_topic("bytes", 1).await?;
        let binary_value = vec![0u8, 159, 146, 150, 255];
        let path = "/v1/topics/bytes/partitions/0/records";
        let (s, _) = c
            .post_json(path, &json!({"encoding": "base64", "records": [{"key": STANDARD.encode(b"k\xff"), "value": STANDARD.encode(&binary_value), "headers": [{"key": "h", "value": STANDARD.encode(b"\x01")}]}]}))
            .await?;
        ensure!(s == 200);
        let (s, _) = c
            .post_json(
                path,
                &json!({"encoding": "json", "records": [{"value": {"a": [1, 2]}, "timestamp_ms": 42}]}),
            )
            .await?;
        ensure!(s == 200);
        let body = wire::encode(&[
            ProduceRecord {
                key: Some(Bytes::from_static(b"bk")),
                value: Some(Bytes::from_static(b"binary body")),
                ..Default::default()
            },
            ProduceRecord {
                value: Some(Bytes::from_static(b"second")),
                timestamp_ms: Some(7),
                headers: vec![Header { key: "trace".into(), value: Bytes::from_static(b"abc") }],
                ..Default::default()
            },
        ]);
        let (s, acked) = c
            .send(
                c.http.post(format!("{}{path}", c.url)).header("content-type", wire::CONTENT_TYPE).body(body),
            )
            .await?;
        ensure!(s == 200 && acked["offsets"][1]["offset"] == 3, "{acked}");

        let (s, all) = c.fetch("bytes", 0, "offset=0&encoding=base64").await?;
        ensure!(s == 200, "{all}");
        let r = &all["records"];
        ensure!(STANDARD.decode(r[0]["value"].as_str().unwrap_or_default())? == binary_value, "{all}");
        ensure!(STANDARD.decode(r[0]["key"].as_str().unwrap_or_default())? == b"k\xff", "{all}");
        ensure!(
            STANDARD.decode(r[0]["headers"][0]["value"].as_str().unwrap_or_default())? == b"\x01",
            "{all}"
        );
        ensure!(r[1]["timestamp_ms"] == 42, "{all}");
        ensure!(STANDARD.decode(r[2]["value"].as_str().unwrap_or_default())? == b"binary body", "{all}");
        ensure!(r[3]["timestamp_ms"] == 7 && r[3]["key"].is_null(), "{all}");

        let (s, json_view) = c.fetch("bytes", 0, "offset=1&max_records=1&encoding=json").await?;
        ensure!(s == 200 && json_view["records"][0]["value"] == json!({"a": [1, 2]}), "{json_view}");
        let (s, text) = c.fetch("bytes", 0, "offset=2&encoding=utf8").await?;
        ensure!(
            s == 200
                && text["records"][0]["value"] == "binary body"
                && text["records"][1]["headers"][0]["value"] == "abc",
            "{text}"
        );
        expect_error(&c.fetch("bytes", 0, "offset=0").await?, 422, "not_representable")?;
        let (s, latest) = c.fetch("bytes", 0, "offset=latest").await?;
        ensure!(
            s == 200 && latest["records"].as_array().is_some_and(Vec::is_empty) && latest["next_offset"] == 4,
            "{latest}"
        );
        let (s, limited) = c.fetch("bytes", 0, "offset=0&max_records=2&encoding=base64").await?;
        ensure!(
            s == 200 && limited["records"].as_array().map(Vec::len) == Some(2) && limited["next_offset"] == 2,
            "{limited}"
        );

        // the binary fetch answer carries the same records
        let binary = c
            .http
            .get(format!("{}/v1/topics/bytes/partitions/0/records?offset=2", c.url))
            .header("accept", wire::CONTENT_TYPE)
            .send()
            .await?;
        ensure!(binary.status() == 200);
        let fetched = wire::decode_fetch(binary.bytes().await?)?;
        ensure!(fetched.next_offset == 4 && fetched.high_watermark == 4, "{fetched:?}");
        ensure!(
            fetched.records[0].0 == 2 && fetched.records[0].1.value.as_deref() == Some(&b"binary body"[..]),
            "{fetched:?}"
        );
        ensure!(fetched.records[1].1.timestamp_ms == 7 && fetched.records[1].1.headers[0].key == "trace");

        let (s, metrics) = c.get("/metrics").await?;
        let metrics = metrics.as_str().unwrap_or_default().to_owned();
        ensure!(s == 200, "metrics");
        for name in [
            "shale_store_requests_total",
            "shale_http_requests_total",
            "shale_produced_records_total",
            "shale_buffer_bytes",
            "shale_http_request_seconds_bucket",
        ] {
            ensure!(metrics.contains(name), "/metrics lacks {name}");
        }
        let (s, health) = c.get("/healthz").await?;
        ensure!(s == 200 && health["status"] == "ok");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_and_conditional_appends() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale =
            Shale::start(dir.path(), &backend, &unique("retries"), &["--flush-interval-ms=20"]).await?;
        let c = shale.client();
        c.create_topic("idem", 2).await?;
        let body =
            json!({"records": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}, {"value": "3"}]});
        let keyed = |key: &str| {
            c.http
                .post(format!("{}/v1/topics/idem/records", c.url))
                .header("idempotency-key", key)
                .json(&body)
        };
        let total = |info: &Value| -> u64 {
            info["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["high_watermark"].as_u64())
                .sum()
        };

        let (s, first) = c.send(keyed("order-1")).await?;
        ensure!(s == 200, "{first}");
        // a retry after the answer, and two concurrent ones (they may share a segment)
        let (s, retry) = c.send(keyed("order-1")).await?;
        ensure!(
            s == 200 && retry["offsets"] == first["offsets"],
            "retry answers the original offsets: {retry} vs {first}"
        );
        let (a, b) = tokio::join!(c.send(keyed("order-2")), c.send(keyed("order-2")));
        let ((sa, a), (sb, b)) = (a?, b?);
        ensure!(sa == 200 && sb == 200 && a["offsets"] == b["offsets"], "concurrent twins: {a} vs {b}");
        let (_, info) = c.get("/v1/topics/idem").await?;
        ensure!(total(&info) == 6, "each keyed request written once: {info}");
        let (s, _) = c.send(keyed("order-3")).await?;
        let (_, info) = c.get("/v1/topics/idem").await?;
        ensure!(s == 200 && total(&info) == 9, "a new key is a new request: {info}");
        let bad = c.send(keyed("has space")).await?;
        expect_error(&bad, 400, "invalid_request")?;

        // conditional append on one partition
        let next = info["partitions"][0]["high_watermark"].as_u64().unwrap_or(0);
        let path = |q: &str| format!("/v1/topics/idem/partitions/0/records{q}");
        let one = json!({"records": [{"value": "x"}]});
        let (s, ok) = c.post_json(&path(&format!("?expected_offset={next}")), &one).await?;
        ensure!(s == 200 && ok["offsets"][0]["offset"] == next, "{ok}");
        let stale = c.post_json(&path(&format!("?expected_offset={next}")), &one).await?;
        expect_error(&stale, 412, "offset_mismatch")?;
        ensure!(stale.1["next_offset"] == next + 1 && stale.1["expected_offset"] == next, "{}", stale.1);
        let in_body = json!({"expected_offset": next + 1, "records": [{"value": "y"}]});
        let (s, ok) = c.post_json(&path(""), &in_body).await?;
        ensure!(s == 200 && ok["offsets"][0]["offset"] == next + 1, "expected_offset in the body: {ok}");
        let (_, info) = c.get("/v1/topics/idem").await?;
        ensure!(
            info["partitions"][0]["high_watermark"] == next + 2,
            "a refused append wrote nothing: {info}"
        );
        let unscoped = c
            .post_json("/v1/topics/idem/records", &json!({"expected_offset": 0, "records": [{"value": "z"}]}))
            .await?;
        expect_error(&unscoped, 400, "invalid_request")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_round_trip_apart_from_empty_values() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let dir = tempfile::tempdir()?;
        let shale =
            Shale::start(dir.path(), &backend, &unique("tombstones"), &["--flush-interval-ms=5"]).await?;
        let c = shale.client();
        c.create_topic("tomb", 1).await?;
        let path = "/v1/topics/tomb/partitions/0/records";
        // JSON: null is a tombstone in every encoding; "" is an empty value
        // (the key is the byte "1" in each encoding)
        for (encoding, key, empty) in [
            ("utf8", json!("1"), json!("")),
            ("base64", json!("MQ=="), json!("")),
            ("json", json!(1), json!("")),
        ] {
            let body = json!({"encoding": encoding, "records": [{"key": key, "value": null}, {"key": key, "value": empty}]});
            let (s, acked) = c.post_json(path, &body).await?;
            ensure!(s == 200, "{encoding}: {acked}");
        }
        // binary body: the tombstone flag
        let body = wire::encode(&[
            ProduceRecord { key: Some(Bytes::from_static(b"1")), value: None, ..Default::default() },
            ProduceRecord {
                key: Some(Bytes::from_static(b"1")),
                value: Some(Bytes::new()),
                ..Default::default()
            },
        ]);
        let request =
            c.http.post(format!("{}{path}", c.url)).header("content-type", wire::CONTENT_TYPE).body(body);
        let (s, acked) = c.send(request).await?;
        ensure!(s == 200 && acked["offsets"][1]["offset"] == 7, "{acked}");

        let (s, all) = c.fetch("tomb", 0, "offset=0&encoding=base64").await?;
        ensure!(s == 200, "{all}");
        let records = all["records"].as_array().cloned().unwrap_or_default();
        ensure!(records.len() == 8, "{all}");
        // tombstones are null; the rest are empty, but for the JSON string "" (bytes `""`)
        let expected = [
            json!(null),
            json!(""),
            json!(null),
            json!(""),
            json!(null),
            json!("IiI="),
            json!(null),
            json!(""),
        ];
        for (i, (r, want)) in records.iter().zip(expected).enumerate() {
            ensure!(r["value"] == want, "offset {i}: want {want}, got {r}");
            ensure!(r["key"] == STANDARD.encode(b"1"), "{r}");
        }
        // the binary fetch answer keeps them apart too
        let binary = c
            .http
            .get(format!("{}{path}?offset=0", c.url))
            .header("accept", wire::CONTENT_TYPE)
            .send()
            .await?;
        let fetched = wire::decode_fetch(binary.bytes().await?)?;
        let values: Vec<Option<usize>> =
            fetched.records.iter().map(|(_, r)| r.value.as_ref().map(Bytes::len)).collect();
        ensure!(values == [None, Some(0), None, Some(0), None, Some(2), None, Some(0)], "{values:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_can_grow_and_change_its_config() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shale =
        Shale::start(dir.path(), &Backend::Local, &unique("patch"), &["--flush-interval-ms=5"]).await?;
    let c = shale.client();
    c.create_topic("grow", 2).await?;
    let patch = |body: Value| c.send(c.http.patch(format!("{}/v1/topics/grow", c.url)).json(&body));
    let (s, info) = patch(json!({"config": {"retention_ms": 3600000}, "partitions": 4})).await?;
    ensure!(s == 200 && info["partitions"].as_array().map(Vec::len) == Some(4), "{info}");
    ensure!(info["config"]["retention_ms"] == 3600000, "{info}");
    let (s, acked) =
        c.post_json("/v1/topics/grow/partitions/3/records", &json!({"records": [{"value": "new"}]})).await?;
    ensure!(s == 200 && acked["offsets"][0]["offset"] == 0, "a new partition takes records: {acked}");
    let (s, info) = patch(json!({"config": {"retention_ms": null}})).await?;
    ensure!(s == 200 && info["config"].get("retention_ms").is_none(), "null clears: {info}");
    expect_error(&patch(json!({"partitions": 1})).await?, 400, "invalid_request")?;
    expect_error(&patch(json!({"config": {"bogus": 1}})).await?, 400, "invalid_request")?;
    expect_error(&patch(json!({})).await?, 400, "invalid_request")?;
    let (s, body) =
        c.send(c.http.patch(format!("{}/v1/topics/missing", c.url)).json(&json!({"partitions": 2}))).await?;
    expect_error(&(s, body), 404, "topic_not_found")?;
    Ok(())
}
