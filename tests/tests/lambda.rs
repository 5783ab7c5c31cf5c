//! `shale-lambda` the way Lambda runs it: the real binary as a child of the
//! Runtime API emulator (`shale_tests::lambda`), against a real controller,
//! on the local disk and on Garage. Events are Function URL (payload 2.0)
//! and EventBridge scheduled events.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use serde_json::{Value, json};
use shale_core::Header;
use shale_core::wire::{self, ProduceRecord};
use shale_tests::archive::list;
use shale_tests::cluster::{CLUSTER_SECRET, secret_flag, single_controller};
use shale_tests::infra;
use shale_tests::lambda::{
    Emulator, Function, HttpAnswer, Outcome, http_api_event, http_event, lambda_binary, scheduled_event,
};
use shale_tests::{Backend, Client, Process, unique};

const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:shale-cluster";
const INVOCATION: Duration = Duration::from_secs(30);

/// One controller, an emulator, and the environment a function gets.
struct Setup {
    dir: tempfile::TempDir,
    controller: Process,
    env: Vec<(String, String)>,
    store_flags: Vec<String>,
    store_url: String,
}

impl Setup {
    async fn start(backend: &Backend) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let controller = single_controller(dir.path()).await?;
        let store_flags = backend.store_args(&unique("lambda"), &dir.path().join("objects"));
        let mut env = vec![
            ("SHALE_CONTROLLERS".to_owned(), controller.url.clone()),
            ("SHALE_CLUSTER_SECRET_ARN".to_owned(), SECRET_ARN.to_owned()),
            ("SHALE_ADMIN_TOKEN_FILE".to_owned(), dir.path().join("admin.token").display().to_string()),
        ];
        // the same settings a server gets as flags, as their environment names
        for flag in &store_flags {
            let flag = flag.trim_start_matches("--");
            let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
            env.push((format!("SHALE_{}", name.replace('-', "_").to_uppercase()), value.to_owned()));
        }
        let store_url =
            store_flags.iter().find_map(|f| f.strip_prefix("--store=")).context("no --store")?.to_owned();
        Ok(Self { dir, controller, env, store_flags, store_url })
    }

    /// A function in its own sandbox: a Runtime API (and secrets extension) of its own.
    async fn spawn(&self, handler: &str, extra: &[(&str, &str)]) -> anyhow::Result<Function> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let emulator = Emulator::start().await?;
        emulator.put_secret(SECRET_ARN, CLUSTER_SECRET);
        emulator.spawn(handler, &env, &self.dir.path().join(format!("{handler}.log")))
    }

    fn token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("admin.token"))?.trim().to_owned())
    }
}

/// A gateway invocation: method, path (with query), headers, body.
async fn call(
    f: &mut Function,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    binary: bool,
) -> anyhow::Result<HttpAnswer> {
    HttpAnswer::from_outcome(f.invoke(http_event(method, path, headers, body, binary), INVOCATION).await?)
}

/// The first answered invocation, waiting out the controller's election;
/// returns the time from process start to it.
async fn first_answer(f: &mut Function) -> anyhow::Result<Duration> {
    for _ in 0..100 {
        let answer = call(f, "GET", "/readyz", &[], None, false).await?;
        if answer.status == 200 {
            return Ok(f.age());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the gateway function never became ready:\n{}", f.log())
}

/// A setup with a ready gateway function, and the admin token's header value.
async fn with_gateway(backend: &Backend) -> anyhow::Result<(Setup, Function, String)> {
    let s = Setup::start(backend).await?;
    let mut f = s.spawn("gateway", &[]).await?;
    first_answer(&mut f).await?;
    let bearer = format!("Bearer {}", s.token()?);
    Ok((s, f, bearer))
}

/// The string values of a JSON fetch answer's records.
fn values_of(page: &HttpAnswer) -> Vec<String> {
    page.json()["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["value"].as_str().map(str::to_owned))
        .collect()
}

fn error_code(a: &HttpAnswer) -> (u16, String) {
    (a.status, a.json()["error_code"].as_str().unwrap_or("(no error_code)").to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_function_serves_the_api_like_the_server() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let s = Setup::start(&backend).await?;
        let mut f = s.spawn("gateway", &[]).await?;
        let cold = first_answer(&mut f).await?;
        eprintln!("[{}] process start to first answered invocation (debug build): {cold:?}", backend.name());
        ensure!(f.init_errors().is_empty(), "init errors: {:?}", f.init_errors());
        let token = s.token()?;
        let bearer = format!("Bearer {token}");
        let auth = [("authorization", bearer.as_str()), ("content-type", "application/json")];

        // tokens are the access control: none answers 401 with the JSON shape
        let anonymous = call(&mut f, "GET", "/v1/topics", &[], None, false).await?;
        ensure!(error_code(&anonymous) == (401, "unauthenticated".into()), "{anonymous:?}");
        ensure!(anonymous.header("www-authenticate") == Some("Bearer"), "{anonymous:?}");

        let create = json!({"name": "lambda", "partitions": 2}).to_string();
        let created = call(&mut f, "POST", "/v1/topics", &auth, Some(create.as_bytes()), false).await?;
        ensure!(created.status == 201, "{created:?} {}", f.log());

        // JSON produce, a tombstone among the records
        let records = json!({"records": [
            {"partition": 0, "key": "k1", "value": "v1", "headers": [{"key": "h", "value": "x"}, {"key": "h", "value": "y"}]},
            {"partition": 0, "key": "k2", "value": null},
        ]})
        .to_string();
        let path = "/v1/topics/lambda/records";
        let acked = call(&mut f, "POST", path, &auth, Some(records.as_bytes()), false).await?;
        ensure!(acked.status == 200 && acked.json()["offsets"][1]["offset"] == 1, "{acked:?}");

        // a binary produce travels base64 in the event
        let body = wire::encode(&[ProduceRecord {
            key: Some(Bytes::from_static(b"bk")),
            value: Some(Bytes::from_static(&[0, 159, 146, 150, 255])),
            timestamp_ms: Some(7),
            headers: vec![Header { key: "trace".into(), value: Bytes::from_static(b"abc") }],
            partition: Some(0),
        }]);
        let binary = [("authorization", bearer.as_str()), ("content-type", wire::CONTENT_TYPE)];
        let acked = call(&mut f, "POST", path, &binary, Some(&body), true).await?;
        ensure!(acked.status == 200 && acked.json()["offsets"][0]["offset"] == 2, "{acked:?}");

        // JSON fetch
        let fetch = "/v1/topics/lambda/partitions/0/records?offset=0&encoding=base64";
        let page = call(&mut f, "GET", fetch, &auth, None, false).await?;
        let fetched = page.json();
        ensure!(page.status == 200 && fetched["records"].as_array().map(Vec::len) == Some(3), "{page:?}");
        ensure!(fetched["records"][1]["value"].is_null(), "the tombstone reads back null: {fetched}");
        ensure!(fetched["records"][0]["headers"][1]["value"] == "eQ==", "headers keep order: {fetched}");
        // binary fetch: the answer goes base64 and decodes to the same records
        let accept = [("authorization", bearer.as_str()), ("accept", wire::CONTENT_TYPE)];
        let page =
            call(&mut f, "GET", "/v1/topics/lambda/partitions/0/records?offset=0", &accept, None, false)
                .await?;
        ensure!(page.status == 200 && page.base64, "a binary answer is base64 in the event: {page:?}");
        let decoded = wire::decode_fetch(Bytes::from(page.body.clone()))?;
        ensure!(decoded.records.len() == 3 && decoded.next_offset == 3, "{decoded:?}");
        let (offset, last) = &decoded.records[2];
        ensure!(*offset == 2 && last.value.as_deref() == Some(&[0, 159, 146, 150, 255][..]), "{last:?}");
        ensure!(last.timestamp_ms == 7 && last.headers[0].key == "trace", "{last:?}");

        // the same function behind an API Gateway HTTP API
        let body = json!({"records": [{"partition": 1, "value": "via http api"}]}).to_string();
        let event = http_api_event("POST", "/v1/topics/lambda/records", &auth, Some(body.as_bytes()), false);
        let acked = HttpAnswer::from_outcome(f.invoke(event, INVOCATION).await?)?;
        ensure!(acked.status == 200 && acked.json()["offsets"][0]["partition"] == 1, "{acked:?}");
        let event =
            http_api_event("GET", "/v1/topics/lambda/partitions/1/records?offset=0", &auth, None, false);
        let page = HttpAnswer::from_outcome(f.invoke(event, INVOCATION).await?)?;
        ensure!(values_of(&page) == ["via http api"], "{page:?}");

        // the error cases answer exactly what `shale gateway` answers
        let mut args = vec![
            "gateway".into(),
            "--listen=127.0.0.1:0".into(),
            format!("--controllers={}", s.controller.url),
            secret_flag(s.dir.path())?,
            "--auth".into(),
        ];
        args.extend(s.store_flags.iter().cloned());
        let server = Process::start(args, s.dir.path().join("gateway.log")).await?;
        let client = Client::new(&server.url);
        let cases: [(&str, &str, Option<&str>); 7] = [
            ("GET", "/v1/topics/nope/partitions/0/records?offset=0", None),
            ("GET", "/v1/topics/lambda/partitions/9/records?offset=0", None),
            ("GET", "/v1/topics/lambda/partitions/0/records?offset=99", None),
            ("GET", "/v1/topics/lambda/partitions/0/records?offset=-1", None),
            ("POST", "/v1/topics/lambda/records", Some("{\"records\": [")),
            ("POST", "/v1/topics", Some("{\"name\": \"bad name!\", \"partitions\": 1}")),
            ("POST", "/v1/topics", Some("{\"name\": \"lambda\", \"partitions\": 1}")),
        ];
        for (method, path, body) in cases {
            let lambda = call(&mut f, method, path, &auth, body.map(str::as_bytes), false).await?;
            let request = client
                .http
                .request(method.parse()?, format!("{}{path}", client.url))
                .header("authorization", &bearer)
                .header("content-type", "application/json")
                .body(body.unwrap_or_default().to_owned());
            let (status, answer) = client.send(request).await?;
            ensure!(lambda.status >= 400, "{method} {path}: {lambda:?}");
            ensure!(
                lambda.status == status && lambda.json() == answer,
                "{method} {path}: Lambda {} {} but the server {status} {answer}",
                lambda.status,
                lambda.json()
            );
        }
        // streams are refused, clearly, since Lambda buffers answers
        let sse = [("authorization", bearer.as_str()), ("accept", "text/event-stream")];
        let refused =
            call(&mut f, "GET", "/v1/topics/lambda/partitions/0/records?offset=0", &sse, None, false).await?;
        ensure!(error_code(&refused) == (400, "invalid_request".into()), "{refused:?}");
        f.kill().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_event_makes_the_compactor_function_archive() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let (s, mut gateway, bearer) = with_gateway(&backend).await?;
        let auth = [("authorization", bearer.as_str()), ("content-type", "application/json")];
        let create =
            json!({"name": "aged", "partitions": 1, "config": {"archive_after_ms": 200}}).to_string();
        let created = call(&mut gateway, "POST", "/v1/topics", &auth, Some(create.as_bytes()), false).await?;
        ensure!(created.status == 201, "{created:?}");
        let values: Vec<String> = (0..40).map(|i| format!("record {i}")).collect();
        for chunk in values.chunks(10) {
            let records: Vec<Value> = chunk.iter().map(|v| json!({"key": v, "value": v})).collect();
            let body = json!({"records": records}).to_string();
            let acked =
                call(&mut gateway, "POST", "/v1/topics/aged/records", &auth, Some(body.as_bytes()), false)
                    .await?;
            ensure!(acked.status == 200, "{acked:?}");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;

        // an invocation with too little time runs short and hands its leases
        // back: another compactor gets the partitions at once, not after the lease
        let mut short = s.spawn("compactor", &[("SHALE_COMPACTOR_ID", "lambda-short")]).await?;
        let outcome = short.invoke(scheduled_event(), Duration::from_secs(1)).await?;
        let Outcome::Response(cut) = outcome else { bail!("{outcome:?}\n{}", short.log()) };
        ensure!(cut["report"]["out_of_time"] == true && cut["leases_released"] == true, "{cut}");
        ensure!(cut["report"]["archived_records"].as_u64().unwrap_or(0) == 0, "{cut}");
        short.kill().await;

        let mut compactor = s.spawn("compactor", &[]).await?;
        let outcome = compactor.invoke(scheduled_event(), Duration::from_secs(60)).await?;
        let Outcome::Response(answer) = outcome else { bail!("{outcome:?}\n{}", compactor.log()) };
        ensure!(answer["report"]["archived_records"] == 40, "{answer}\n{}", compactor.log());
        ensure!(answer["leases_released"] == true, "{answer}");

        let store = shale_tests::archive::open_flagged(&backend, &s.store_flags)?;
        let files = list(store.as_ref(), "archive/topic=aged/partition=0").await?;
        ensure!(
            files.iter().any(|k| k.ends_with(".parquet")),
            "no archive file in {} : {files:?}",
            s.store_url
        );
        // the archived range reads back the same through the gateway
        let path = "/v1/topics/aged/partitions/0/records?offset=0&max_records=100";
        let page = call(&mut gateway, "GET", path, &auth, None, false).await?;
        let read = values_of(&page);
        ensure!(read == values, "{page:?}");

        // infra/aws grants each function the S3 actions its requests need
        let metrics = call(&mut gateway, "GET", "/metrics", &auth, None, false).await?;
        let gateway_ops = ops_in_metrics(&String::from_utf8_lossy(&metrics.body));
        ensure!(gateway_ops.contains("put") && gateway_ops.contains("get"), "{gateway_ops:?}");
        let compactor_ops: BTreeSet<String> = answer["store_requests_since_start"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(op, _)| op.clone())
            .collect();
        ensure!(compactor_ops.contains("put") && compactor_ops.contains("list"), "{answer}");
        iam_covers(&[("gateway", gateway_ops), ("compactor", compactor_ops)])?;
        compactor.kill().await;
        gateway.kill().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invocation_cut_off_mid_flush_loses_no_acknowledged_record() -> anyhow::Result<()> {
    for backend in Backend::all() {
        let (s, mut f, bearer) = with_gateway(&backend).await?;
        let auth = [("authorization", bearer.as_str()), ("content-type", "application/json")];
        let create = json!({"name": "cut", "partitions": 1}).to_string();
        ensure!(
            call(&mut f, "POST", "/v1/topics", &auth, Some(create.as_bytes()), false).await?.status == 201
        );
        let mut acked = Vec::new();
        for i in 0..5 {
            let body = json!({"records": [{"value": format!("acked {i}")}]}).to_string();
            let answer =
                call(&mut f, "POST", "/v1/topics/cut/records", &auth, Some(body.as_bytes()), false).await?;
            ensure!(answer.status == 200, "{answer:?}");
            acked.push(format!("acked {i}"));
        }
        f.kill().await;

        // every PUT now takes 10 s: the invocation overruns its 1.5 s and is killed mid-flush
        let mut slow = s.spawn("gateway", &[("SHALE_STORE_FAULTS", "slow=1:10000")]).await?;
        let body = json!({"records": [{"value": "never acknowledged"}]}).to_string();
        let event = http_event("POST", "/v1/topics/cut/records", &auth, Some(body.as_bytes()), false);
        let outcome = slow.invoke(event, Duration::from_millis(1500)).await?;
        ensure!(matches!(outcome, Outcome::TimedOut), "expected a timeout, got {outcome:?}");

        let mut after = s.spawn("gateway", &[]).await?;
        first_answer(&mut after).await?;
        let page =
            call(&mut after, "GET", "/v1/topics/cut/partitions/0/records?offset=0", &auth, None, false)
                .await?;
        let read = values_of(&page);
        ensure!(read == acked, "every acknowledged record, in order, and nothing else: {read:?}");
        ensure!(page.json()["high_watermark"] == acked.len(), "{:?}", page.json());
        after.kill().await;
    }
    Ok(())
}

/// Kinds of store requests made (count > 0) per `shale_store_requests_total`.
fn ops_in_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with("shale_store_requests_total{"))
        .filter_map(|l| {
            let op = l.split("op=\"").nth(1)?.split('"').next()?.to_lowercase();
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            (n > 0.0).then_some(op)
        })
        .collect()
}

/// Every request kind a role made maps to S3 actions its policy in
/// infra/aws/iam.tf grants; the controllers' grant covers every kind.
fn iam_covers(observed: &[(&str, BTreeSet<String>)]) -> anyhow::Result<()> {
    let Some(parsed) = infra::parse_all()? else { return Ok(()) };
    let grants = infra::iam_grants(&parsed)?;
    let granted = |role: &str| grants.iter().find(|(r, _, _)| r == role);
    let mut checks: Vec<(&str, BTreeSet<String>)> = observed.to_vec();
    checks.push(("controller", ["put", "get", "delete", "list"].map(String::from).into()));
    for (role, ops) in checks {
        let (_, actions, lists) = granted(role).with_context(|| format!("no grant for {role}"))?;
        for op in &ops {
            for needed in infra::actions_for(op) {
                let ok =
                    if *needed == "s3:ListBucket" { *lists } else { actions.iter().any(|a| a == needed) };
                ensure!(ok, "infra/aws/iam.tf: {role} makes {op} requests but is not granted {needed}");
            }
        }
    }
    Ok(())
}

/// The versions of glibc a binary's dynamic symbols need, e.g. (2, 34).
fn glibc_versions(path: &Path) -> anyhow::Result<Vec<(u32, u32)>> {
    use object::read::elf::{ElfFile64, FileHeader};
    let data = std::fs::read(path)?;
    let elf = ElfFile64::<object::Endianness>::parse(data.as_slice())?;
    let endian = elf.endian();
    let sections = elf.elf_header().sections(endian, data.as_slice())?;
    let Some(versions) = sections.versions(endian, data.as_slice())? else { return Ok(Vec::new()) };
    let symbols = sections.symbols(endian, data.as_slice(), object::elf::SHT_DYNSYM)?;
    let mut out = Vec::new();
    for index in 0..symbols.len() {
        let version = versions.version_index(endian, object::SymbolIndex(index));
        let Some(v) = versions.version(version)? else { continue };
        let name = String::from_utf8_lossy(v.name());
        if let Some(number) = name.strip_prefix("GLIBC_") {
            let mut parts = number.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            out.push((parts.next().unwrap_or(0), parts.next().unwrap_or(0)));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The builds to check: the one the test command built, and the Lambda
/// builds of scripts/build-lambda.sh when `SHALE_LAMBDA_DIR` names them.
fn lambda_builds() -> Vec<std::path::PathBuf> {
    let mut out = vec![lambda_binary()];
    if let Ok(dir) = std::env::var("SHALE_LAMBDA_DIR") {
        for arch in ["x86_64", "arm64"] {
            out.push(Path::new(&dir).join(arch).join("shale-lambda").join("bootstrap"));
        }
    }
    out
}

#[test]
fn the_lambda_binary_links_no_raft_server_nor_kafka_listener_and_runs_on_al2023() -> anyhow::Result<()> {
    // what only servers link: the Raft server, its store, the Kafka listener
    // and its protocol crate
    const SERVER_ONLY: [&str; 4] = ["openraft", "redb", "kafka_protocol", "shale_kafka"];
    // the check works: the server binary does link them
    let server = std::fs::read(shale_tests::process::binary())?;
    for server_only in SERVER_ONLY {
        let found = server.windows(server_only.len()).any(|w| w == server_only.as_bytes());
        ensure!(found, "the check cannot see {server_only} in shale");
    }
    for bin in lambda_builds() {
        let bytes = std::fs::read(&bin)
            .with_context(|| format!("{} (cargo build --bin shale-lambda)", bin.display()))?;
        for server_only in SERVER_ONLY {
            let found = bytes.windows(server_only.len()).any(|w| w == server_only.as_bytes());
            ensure!(!found, "{} links {server_only}", bin.display());
        }
        let needed = glibc_versions(&bin)?;
        ensure!(!needed.is_empty(), "no glibc versions found in {}", bin.display());
        let newest = needed.last().copied().unwrap_or_default();
        eprintln!("{} needs glibc {}.{} at most", bin.display(), newest.0, newest.1);
        ensure!(
            newest <= (2, 34),
            "{} needs glibc {newest:?}, newer than Amazon Linux 2023's 2.34",
            bin.display()
        );
    }
    Ok(())
}
