//! Router-level tests on an in-memory store and a real single-node controller.
//! The end-to-end suite in `tests/` drives the real binary.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use object_store::memory::InMemory;
use serde_json::{Value, json};
use shale_controller::{ControllerNode, NodeConfig};
use shale_core::SystemClock;
use tower::ServiceExt;

use super::*;

async fn app(dir: &std::path::Path) -> Router {
    let node = ControllerNode::start_single(NodeConfig::new(1, dir.to_owned())).await.expect("controller");
    let config =
        GatewayConfig { flush_interval: std::time::Duration::from_millis(5), ..GatewayConfig::default() };
    let state = AppState::new(
        config,
        Arc::new(node),
        Arc::new(InMemory::new()),
        Arc::new(GatewayMetrics::new()),
        Arc::new(SystemClock),
    );
    router(state)
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
    let app = app(dir.path()).await;
    let (s, _) = call(&app, "POST", "/v1/topics", Some(json!({"name": "t", "partitions": 2}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = call(
        &app,
        "POST",
        "/v1/topics/t/partitions/1/records",
        Some(json!({"records": [{"value": "a"}, {"value": "b", "key": "k"}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["offsets"], json!([{"partition": 1, "offset": 0}, {"partition": 1, "offset": 1}]));
    let (s, body) = call(&app, "GET", "/v1/topics/t/partitions/1/records?offset=1", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["records"][0]["value"], "b");
    assert_eq!(body["records"][0]["key"], "k");
    assert_eq!(body["next_offset"], 2);
    let (s, body) = call(&app, "GET", "/nope", None).await;
    assert_eq!((s, body["error_code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, body) = call(&app, "PUT", "/v1/topics", None).await;
    assert_eq!(
        (s, body["error_code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
}
