//! TLS on every listener, with certificates made at test time (rcgen): three
//! controllers (Raft RPCs over HTTPS) and a gateway serve HTTPS; the gateway
//! reaches the controllers over HTTPS with the cluster secret, trusting the
//! test CA; clients (the CLI and reqwest) verify the gateway with
//! `--ca-cert`. Without the CA, or in plain HTTP, nothing gets through. The gateway also runs with `--auth`
//! and `--admin-token-file`, the cluster form of authentication.
//!
//! TLS is a property of the listeners, not of the object store, so this
//! runs on the local disk only.

use anyhow::ensure;
use serde_json::{Value, json};
use shale_tests::cluster::{free_ports, secret_flag};
use shale_tests::{Process, process::binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_gateway_and_clients_speak_tls() -> anyhow::Result<()> {
    eprintln!("local disk only: TLS is a property of the listeners");
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    shale_tests::certs::make_certs(d)?;
    let tls = [
        format!("--tls-cert={}", d.join("server.pem").display()),
        format!("--tls-key={}", d.join("server.key").display()),
    ];
    let ca = format!("--ca-cert={}", d.join("ca.pem").display());
    let ports = free_ports(3)?;
    let peers: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1)).collect();
    let mut controllers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut args = vec![
            "controller".to_owned(),
            format!("--id={}", i + 1),
            format!("--listen=127.0.0.1:{port}"),
            format!("--peers={}", peers.join(",")),
            format!("--data-dir={}", d.join(format!("controller-{i}")).display()),
            secret_flag(d)?,
            ca.clone(),
        ];
        args.extend(tls.iter().cloned());
        let controller = Process::start(args, d.join(format!("controller-{i}.log"))).await?;
        ensure!(controller.url.starts_with("https://"), "controller URL {}", controller.url);
        controllers.push(controller);
    }
    let urls: Vec<String> = controllers.iter().map(|c| c.url.clone()).collect();
    let controller = &controllers[0];
    let mut args = vec![
        "gateway".to_owned(),
        "--listen=127.0.0.1:0".into(),
        format!("--controllers={}", urls.join(",")),
        format!("--store=file://{}", d.join("objects").display()),
        secret_flag(d)?,
        ca.clone(),
        "--auth".into(),
        format!("--admin-token-file={}", d.join("admin.token").display()),
    ];
    args.extend(tls.iter().cloned());
    let gateway = Process::start(args, d.join("gateway.log")).await?;
    ensure!(gateway.url.starts_with("https://"), "gateway URL {}", gateway.url);
    // the cluster form of auth: the gateway's first start made the admin token
    let admin = std::fs::read_to_string(d.join("admin.token"))?.trim().to_owned();

    let pem = std::fs::read(d.join("ca.pem"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {admin}").parse()?);
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .default_headers(headers)
        .build()?;
    let url = |p: &str| format!("{}{p}", gateway.url);
    let mut ready = false;
    for _ in 0..100 {
        if trusting.get(url("/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = || std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default();
    ensure!(ready, "the gateway reaches the controller over TLS and is ready:\n{}", log());

    // a topic, a record and a fetch over HTTPS
    let created =
        trusting.post(url("/v1/topics")).json(&json!({"name": "secure", "partitions": 1})).send().await?;
    ensure!(created.status() == 201, "create over TLS: {}", created.status());
    let produced: Value = trusting
        .post(url("/v1/topics/secure/records"))
        .json(&json!({"records": [{"value": "sealed"}]}))
        .send()
        .await?
        .json()
        .await?;
    ensure!(produced["offsets"][0]["offset"] == 0, "{produced}");
    let fetched: Value =
        trusting.get(url("/v1/topics/secure/partitions/0/records?offset=0")).send().await?.json().await?;
    ensure!(fetched["records"][0]["value"] == "sealed", "{fetched}");

    // tokens made through a gateway live in the controllers, and grants hold
    let grants = json!([{"operation": "produce", "topic": "secure"}]);
    let created: Value = trusting
        .post(url("/v1/tokens"))
        .json(&json!({"name": "writer", "grants": grants}))
        .send()
        .await?
        .json()
        .await?;
    let writer = created["token"].as_str().unwrap_or_default().to_owned();
    let as_writer = |r: reqwest::RequestBuilder| r.header("authorization", format!("Bearer {writer}"));
    let anon =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem)?).build()?;
    let wrote = as_writer(anon.post(url("/v1/topics/secure/records")))
        .json(&json!({"records": [{"value": "by writer"}]}))
        .send()
        .await?;
    ensure!(wrote.status() == 200, "the writer produces: {}", wrote.status());
    let read = as_writer(anon.get(url("/v1/topics/secure/partitions/0/records?offset=0"))).send().await?;
    ensure!(read.status() == 403, "the writer may not consume: {}", read.status());
    let nobody = anon.get(url("/v1/topics")).send().await?;
    ensure!(nobody.status() == 401, "no token, no answer: {}", nobody.status());

    // the CLI verifies the gateway with --ca-cert
    let listed = std::process::Command::new(binary())
        .args(["topic", "list", &format!("--url={}", gateway.url), &ca, &format!("--token={admin}")])
        .output()?;
    ensure!(
        listed.status.success(),
        "shale topic list over TLS: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    ensure!(String::from_utf8_lossy(&listed.stdout).contains("secure"), "the CLI lists the topic");
    let untrusted = std::process::Command::new(binary())
        .args(["topic", "list", &format!("--url={}", gateway.url), &format!("--token={admin}")])
        .output()?;
    ensure!(!untrusted.status.success(), "without the CA the CLI refuses the server");

    // without the CA, or in plain HTTP, nothing gets through
    let plain = reqwest::Client::new();
    ensure!(plain.get(url("/healthz")).send().await.is_err(), "an unknown CA is refused");
    let http_url = gateway.url.replacen("https://", "http://", 1);
    let cleartext = plain.get(format!("{http_url}/healthz")).send().await;
    ensure!(cleartext.is_err() || cleartext.is_ok_and(|r| r.status() != 200), "plain HTTP is not served");
    let controller_status = trusting.get(format!("{}/api/status", controller.url)).send().await?;
    ensure!(controller_status.status() == 401, "the controller still wants the cluster secret over TLS");
    // the three elected a leader over TLS and all applied the commits
    let secret = std::fs::read_to_string(d.join("cluster.secret"))?;
    let mut applied = Vec::new();
    for _ in 0..50 {
        applied.clear();
        for c in &controllers {
            let status: Value = trusting
                .get(format!("{}/api/status", c.url))
                .bearer_auth(secret.trim())
                .send()
                .await?
                .json()
                .await?;
            applied.push(status["last_applied"].as_u64().unwrap_or(0));
        }
        if applied.iter().all(|a| *a >= 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(
        applied.iter().all(|a| *a >= 2),
        "every controller applied entries replicated over TLS: {applied:?}"
    );
    Ok(())
}
