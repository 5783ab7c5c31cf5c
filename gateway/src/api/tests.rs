//! Router-level tests on an in-memory store and a real single-node controller.
//! The end-to-end suite in `tests/` drives the real binary.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use serde_json::{Value, json};
use shale_controller::{ControllerNode, NodeConfig};
use shale_core::SystemClock;
use shale_core::store::{MeteredStore, Op};
use tower::ServiceExt;

use crate::{GatewayConfig, GatewayMetrics};

use super::*;

/// A gateway router on a metered in-memory store and a real controller.
struct TestGateway {
    app: Router,
    metrics: Arc<GatewayMetrics>,
    node: ControllerNode,
    store: Arc<dyn ObjectStore>,
}

fn gateway(node: ControllerNode, store: Arc<dyn ObjectStore>) -> TestGateway {
    let config =
        GatewayConfig { flush_interval: std::time::Duration::from_millis(5), ..GatewayConfig::default() };
    let metrics = Arc::new(GatewayMetrics::new());
    let metered: Arc<dyn ObjectStore> = Arc::new(MeteredStore::new(store.clone(), metrics.store.clone()));
    let state = AppState::new(
        config,
        Arc::new(node.clone()),
        metered,
        metrics.clone(),
        Arc::new(SystemClock),
        crate::auth::AuthMode::Off,
    );
    TestGateway { app: router(state), metrics, node, store }
}

async fn app(dir: &std::path::Path) -> TestGateway {
    let node = ControllerNode::start_single(NodeConfig::new(1, dir.to_owned())).await.expect("controller");
    gateway(node, Arc::new(InMemory::new()))
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).expect("request")).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn produce_then_fetch_in_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = app(dir.path()).await;
    let app = &gw.app;
    let (s, _) = call(app, "POST", "/v1/topics", Some(json!({"name": "t", "partitions": 2}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(
        app,
        "POST",
        "/v1/topics/t/partitions/1/records",
        Some(json!({"records": [{"value": "a"}, {"value": "b", "key": "k"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["offsets"], json!([{"partition": 1, "offset": 0}, {"partition": 1, "offset": 1}]));
    let (s, body) = call(app, "GET", "/v1/topics/t/partitions/1/records?offset=1", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["records"][0]["value"], "b");
    assert_eq!(body["records"][0]["key"], "k");
    assert_eq!(body["next_offset"], 2);
    let (s, body) = call(app, "GET", "/nope", None).await;
    assert_eq!((s, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, body) = call(app, "PUT", "/v1/topics", None).await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn tailing_reads_hit_the_flush_cache_and_cold_reads_fetch_one_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = app(dir.path()).await;
    call(&gw.app, "POST", "/v1/topics", Some(json!({"name": "tail", "partitions": 1}))).await;
    for i in 0..3 {
        let (s, _) = call(
            &gw.app,
            "POST",
            "/v1/topics/tail/records",
            Some(json!({"records": [{"value": format!("v{i}")}]})),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, body) =
            call(&gw.app, "GET", &format!("/v1/topics/tail/partitions/0/records?offset={i}"), None).await;
        assert_eq!((s, &body["records"][0]["value"]), (StatusCode::OK, &json!(format!("v{i}"))));
    }
    assert_eq!(gw.metrics.store.requests(Op::Put), 3, "one segment per flush");
    assert_eq!(gw.metrics.store.requests(Op::Get), 0, "tailing reads cost no GETs");
    assert_eq!(gw.metrics.cache_hits.get(), 3);

    // a second gateway with a cold cache reads the same log from the store
    let cold = gateway(gw.node.clone(), gw.store.clone());
    let (s, body) = call(&cold.app, "GET", "/v1/topics/tail/partitions/0/records?offset=0", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["records"].as_array().map(Vec::len), Some(3));
    assert_eq!(cold.metrics.store.requests(Op::Get), 3, "one ranged GET per chunk");
    assert!(cold.metrics.store.bytes_read() < 1000, "only the chunks' bytes were read");
}

/// Every (method, path) the OpenAPI document lists.
fn documented() -> Vec<(String, String)> {
    let doc: Value = serde_json::from_str(openapi::document()).expect("the document is JSON");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn every_served_route_is_documented_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = app(dir.path()).await;
    let expected = [
        ("DELETE", "/v1/groups/{group}"),
        ("DELETE", "/v1/groups/{group}/members/{member_id}"),
        ("DELETE", "/v1/tokens/{name}"),
        ("DELETE", "/v1/topics/{topic}"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("GET", "/v1/groups"),
        ("GET", "/v1/groups/{group}"),
        ("GET", "/v1/groups/{group}/members/{member_id}/records"),
        ("GET", "/v1/groups/{group}/offsets"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/tokens"),
        ("GET", "/v1/topics"),
        ("GET", "/v1/topics/{topic}"),
        ("GET", "/v1/topics/{topic}/partitions/{partition}/offsets"),
        ("GET", "/v1/topics/{topic}/partitions/{partition}/records"),
        ("PATCH", "/v1/topics/{topic}"),
        ("POST", "/v1/groups/{group}/offsets"),
        ("POST", "/v1/groups/{group}/offsets/reset"),
        ("POST", "/v1/tokens"),
        ("POST", "/v1/topics"),
        ("POST", "/v1/topics/{topic}/partitions/{partition}/records"),
        ("POST", "/v1/topics/{topic}/records"),
        ("PUT", "/v1/groups/{group}/members/{member_id}"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented(), expected, "the document lists exactly the API's routes");
    let concrete = |path: &str| {
        path.replace("{topic}", "t")
            .replace("{partition}", "0")
            .replace("{name}", "n")
            .replace("{group}", "g")
            .replace("{member_id}", "m")
    };
    for (method, path) in &expected {
        let (status, body) = call(&g.app, method, &concrete(path), None).await;
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED || body["message"] == "no such route";
        assert!(!unrouted, "{method} {path} is documented but not served: {status} {body}");
    }
    // any other method on a documented path is refused by the router
    for path in expected.iter().map(|(_, p)| p).collect::<std::collections::BTreeSet<_>>() {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if expected.iter().any(|(m, p)| m == method && p == path) {
                continue;
            }
            let (status, body) = call(&g.app, method, &concrete(path), None).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but undocumented: {body}"
            );
        }
    }
    for path in ["/v1", "/v1/topics/t/partitions", "/v1/groups/g/members", "/api/status"] {
        let (status, body) = call(&g.app, "GET", path, None).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    g.node.shutdown().await;
}

#[test]
fn the_document_in_docs_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let current = format!("{}\n", openapi::document());
    if std::env::var_os("SHALE_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &current).expect("write docs/openapi.json");
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == current,
        "docs/openapi.json is stale: run SHALE_UPDATE_OPENAPI=1 cargo test -p shale-gateway"
    );
    let doc: Value = serde_json::from_str(&current).expect("json");
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"), "OpenAPI 3.1");
}
