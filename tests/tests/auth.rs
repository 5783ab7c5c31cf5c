//! Authentication and per-topic authorization on the public API, against
//! the real binary: `shale dev --auth` writes an admin token (mode 0600);
//! every /v1 route needs a token; grants decide the rest; a principal that
//! may not describe a topic cannot learn whether it exists; revoked tokens
//! stop working; health checks stay open.
//!
//! Tokens live in the controller, not in the object store, so this runs on
//! the local disk only.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use shale_tests::{Backend, Shale, unique};

/// Status and JSON body of a request made with `token`.
async fn call(request: reqwest::RequestBuilder, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    let response = request.send().await?;
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").cloned();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == 401 {
        ensure!(challenge.is_some_and(|c| c == "Bearer"), "401 carries WWW-Authenticate: Bearer");
    }
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_grants_decide_who_does_what() -> anyhow::Result<()> {
    eprintln!("local disk only: tokens live in the controller, not in the object store");
    let dir = tempfile::tempdir()?;
    let shale = Shale::start(dir.path(), &Backend::Local, &unique("auth"), &["--auth"]).await?;
    let log = shale.log();
    let first = log.lines().next().unwrap_or_default();
    ensure!(first.contains("authentication is on"), "first log line says auth is on: {first}");
    let path = dir.path().join("admin.token");
    let mode = std::fs::metadata(&path).context("admin.token written")?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "admin.token has mode {mode:o}");
    let admin = std::fs::read_to_string(&path)?.trim().to_owned();
    ensure!(!log.contains(&admin), "the token is never logged");

    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", shale.url);
    let records = json!({"records": [{"value": "v"}]});

    // no token, a bad token: 401 everywhere under /v1; health stays open
    for token in [None, Some("shale_not-a-token")] {
        let (status, body) = call(http.get(url("/v1/topics")), token).await?;
        ensure!(status == 401 && body["error_code"] == "unauthenticated", "{status} {body}");
        let (status, _) = call(http.post(url("/v1/topics/x/records")).json(&records), token).await?;
        ensure!(status == 401, "produce without a valid token: {status}");
    }
    ensure!(call(http.get(url("/healthz")), None).await?.0 == 200, "healthz is open");
    ensure!(call(http.get(url("/readyz")), None).await?.0 == 200, "readyz is open");

    // the admin makes topics and tokens
    for name in ["orders", "orders-eu", "payments"] {
        let (status, body) =
            call(http.post(url("/v1/topics")).json(&json!({"name": name, "partitions": 1})), Some(&admin))
                .await?;
        ensure!(status == 201, "create {name}: {status} {body}");
    }
    let grants =
        json!([{"operation": "produce", "topic": "orders*"}, {"operation": "consume", "topic": "orders"}]);
    let (status, created) = call(
        http.post(url("/v1/tokens")).json(&json!({"name": "orders-app", "grants": grants})),
        Some(&admin),
    )
    .await?;
    ensure!(status == 201, "create token: {status} {created}");
    let app = created["token"].as_str().context("the token is shown once")?.to_owned();
    let (_, listed) = call(http.get(url("/v1/tokens")), Some(&admin)).await?;
    ensure!(!listed.to_string().contains(&app), "listing never shows a token: {listed}");
    ensure!(listed["tokens"].as_array().is_some_and(|t| t.len() == 2), "admin and orders-app: {listed}");

    // what the grants allow
    let (status, body) =
        call(http.post(url("/v1/topics/orders-eu/records")).json(&records), Some(&app)).await?;
    ensure!(status == 200, "produce on orders*: {status} {body}");
    let (status, _) =
        call(http.get(url("/v1/topics/orders/partitions/0/records?offset=0")), Some(&app)).await?;
    ensure!(status == 200, "consume orders");
    let (status, body) =
        call(http.get(url("/v1/topics/orders-eu/partitions/0/records?offset=0")), Some(&app)).await?;
    ensure!(status == 403 && body["error_code"] == "forbidden", "no consume on orders-eu: {status} {body}");
    let (status, _) = call(http.delete(url("/v1/topics/orders")), Some(&app)).await?;
    ensure!(status == 403, "no admin: cannot delete");
    let (status, _) =
        call(http.patch(url("/v1/topics/orders")).json(&json!({"partitions": 9})), Some(&app)).await?;
    ensure!(status == 403, "no admin: cannot change a topic");
    let (status, _) = call(http.get(url("/v1/tokens")), Some(&app)).await?;
    ensure!(status == 403, "tokens need admin on *");
    let (_, listed) = call(http.get(url("/v1/topics")), Some(&app)).await?;
    let names: Vec<&str> =
        listed["topics"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    ensure!(names == ["orders", "orders-eu"], "only describable topics are listed: {names:?}");

    // an existing and a missing topic look the same to a principal without describe
    let existing = call(http.get(url("/v1/topics/payments")), Some(&app)).await?;
    let missing = call(http.get(url("/v1/topics/nothing-here")), Some(&app)).await?;
    ensure!(existing.0 == 403 && missing.0 == 403, "403 both: {existing:?} {missing:?}");
    let produce_missing =
        call(http.post(url("/v1/topics/nothing-here/records")).json(&records), Some(&app)).await?;
    ensure!(produce_missing.0 == 403, "no 404 leak on produce: {produce_missing:?}");
    let admin_missing = call(http.get(url("/v1/topics/nothing-here")), Some(&admin)).await?;
    ensure!(admin_missing.0 == 404, "the admin sees 404: {admin_missing:?}");

    // revoked: 401 at once
    let (status, _) = call(http.delete(url("/v1/tokens/orders-app")), Some(&admin)).await?;
    ensure!(status == 204, "revoke: {status}");
    let (status, _) = call(http.post(url("/v1/topics/orders/records")).json(&records), Some(&app)).await?;
    ensure!(status == 401, "a revoked token is refused: {status}");
    let (status, body) = call(http.delete(url("/v1/tokens/orders-app")), Some(&admin)).await?;
    ensure!(status == 404 && body["error_code"] == "token_not_found", "{status} {body}");

    // bad token requests
    let bad = json!({"name": "x", "grants": [{"operation": "fly", "topic": "*"}]});
    ensure!(call(http.post(url("/v1/tokens")).json(&bad), Some(&admin)).await?.0 == 400, "unknown operation");
    let bad = json!({"name": "x", "grants": [{"operation": "produce", "topic": "a*b"}]});
    ensure!(call(http.post(url("/v1/tokens")).json(&bad), Some(&admin)).await?.0 == 400, "bad pattern");
    let dup = json!({"name": "admin", "grants": [{"operation": "produce", "topic": "*"}]});
    let (status, body) = call(http.post(url("/v1/tokens")).json(&dup), Some(&admin)).await?;
    ensure!(status == 409 && body["error_code"] == "token_exists", "{status} {body}");

    // a restart keeps tokens and does not write a new admin token
    let shale = shale.restart().await?;
    ensure!(std::fs::read_to_string(&path)?.trim() == admin, "admin.token unchanged");
    let (status, _) = call(http.get(format!("{}/v1/topics", shale.url)), Some(&admin)).await?;
    ensure!(status == 200, "the admin token survives a restart");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_dev_without_auth_says_so_first() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shale = Shale::start(dir.path(), &Backend::Local, &unique("noauth"), &[]).await?;
    let log = shale.log();
    let first = log.lines().next().unwrap_or_default();
    ensure!(first.contains("authentication is off"), "first log line: {first}");
    ensure!(!dir.path().join("admin.token").exists(), "no admin token without auth");
    let (status, _) = call(reqwest::Client::new().get(format!("{}/v1/topics", shale.url)), None).await?;
    ensure!(status == 200, "no token needed on loopback without --auth");
    Ok(())
}
