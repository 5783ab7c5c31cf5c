//! A Lambda Runtime API emulator: it serves what a custom runtime talks to
//! (`/2018-06-01/runtime/invocation/next`, `…/{id}/response`, `…/{id}/error`,
//! `…/init/error`) and, for the cluster secret, the Parameters and Secrets
//! extension's `/secretsmanager/get`. It runs the real `shale-lambda` as a
//! child process with the `AWS_LAMBDA_*` variables Lambda sets, and kills it
//! when an invocation overruns its timeout, as Lambda does.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};

/// What an invocation came to.
#[derive(Debug)]
pub enum Outcome {
    /// The function's answer (for the gateway, a payload 2.0 response).
    Response(Value),
    /// The function reported an error.
    Error(Value),
    /// It overran its timeout and was killed.
    TimedOut,
}

struct Pending {
    id: String,
    event: Value,
    deadline_ms: u64,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Pending>>,
    queued: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_errors: Mutex<Vec<Value>>,
    secrets: Mutex<HashMap<String, String>>,
}

/// The session token the extension checks callers by.
const SESSION_TOKEN: &str = "shale-test-session-token";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:shale-test";

pub struct Emulator {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    use shale_core::Clock;
    shale_core::SystemClock.now_ms().max(0) as u64
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    loop {
        let notified = shared.queued.notified();
        if let Some(p) = lock(&shared.queue).pop_front() {
            let headers = [
                ("lambda-runtime-aws-request-id", p.id.clone()),
                ("lambda-runtime-deadline-ms", p.deadline_ms.to_string()),
                ("lambda-runtime-invoked-function-arn", FUNCTION_ARN.to_owned()),
                ("lambda-runtime-trace-id", format!("Root=1-{:08x}-{}", now_ms() / 1000, p.id)),
            ];
            return (headers, axum::Json(p.event)).into_response();
        }
        notified.await;
    }
}

fn settle(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match lock(&shared.waiting).remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn respond(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    settle(&shared, &id, Outcome::Response(value))
}

async fn fail(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    settle(&shared, &id, Outcome::Error(value))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    lock(&shared.init_errors).push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    StatusCode::ACCEPTED
}

async fn secret(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("x-aws-parameters-secrets-token").and_then(|v| v.to_str().ok()) != Some(SESSION_TOKEN) {
        return (StatusCode::FORBIDDEN, "missing or wrong X-Aws-Parameters-Secrets-Token").into_response();
    }
    let id = q.get("secretId").cloned().unwrap_or_default();
    match lock(&shared.secrets).get(&id) {
        Some(s) => axum::Json(json!({"ARN": id, "Name": id, "SecretString": s})).into_response(),
        None => (StatusCode::BAD_REQUEST, "ResourceNotFoundException").into_response(),
    }
}

impl Emulator {
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/secretsmanager/get", get(secret))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, server })
    }

    /// Makes `value` readable through the secrets extension as `id`.
    pub fn put_secret(&self, id: &str, value: &str) {
        lock(&self.shared.secrets).insert(id.to_owned(), value.to_owned());
    }

    /// Starts `shale-lambda` with `_HANDLER=handler`, Lambda's variables and
    /// `env`; its log goes to `log`. Like each Lambda sandbox, the function
    /// has this Runtime API to itself.
    pub fn spawn(self, handler: &str, env: &[(String, String)], log: &Path) -> anyhow::Result<Function> {
        self.spawn_binary(&lambda_binary(), handler, env, log)
    }

    /// [`Emulator::spawn`] with another build of `shale-lambda`.
    pub fn spawn_binary(
        self,
        bin: &Path,
        handler: &str,
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Function> {
        if !bin.exists() {
            bail!("{} is missing: build it first (cargo build --bin shale-lambda)", bin.display());
        }
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let started = Instant::now();
        let child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", self.addr.to_string())
            .env("_HANDLER", handler)
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("shale-{handler}"))
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/shale-{handler}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/02/[$LATEST]0123456789abcdef")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("LAMBDA_TASK_ROOT", "/var/task")
            .env("SHALE_SECRETS_EXTENSION_URL", format!("http://{}", self.addr))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(Function { child, shared: self.shared.clone(), started, log: log.to_path_buf(), _emulator: self })
    }
}

/// `shale-lambda` next to the test executable (built by the test command).
pub fn lambda_binary() -> PathBuf {
    crate::process::binary().with_file_name("shale-lambda")
}

/// A running `shale-lambda`: invocations go to it one at a time.
pub struct Function {
    child: Child,
    shared: Arc<Shared>,
    started: Instant,
    log: PathBuf,
    _emulator: Emulator,
}

impl Function {
    /// Hands `event` to the function with `timeout`; on overrun the process
    /// is killed (as Lambda does) and the outcome is `TimedOut`.
    pub async fn invoke(&mut self, event: Value, timeout: Duration) -> anyhow::Result<Outcome> {
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.waiting).insert(id.clone(), tx);
        let deadline_ms = now_ms() + timeout.as_millis() as u64;
        lock(&self.shared.queue).push_back(Pending { id: id.clone(), event, deadline_ms });
        self.shared.queued.notify_one();
        enum Ended {
            Settled(Result<Outcome, oneshot::error::RecvError>),
            Overran,
            Exited(std::io::Result<std::process::ExitStatus>),
        }
        let ended = tokio::select! {
            outcome = rx => Ended::Settled(outcome),
            () = tokio::time::sleep(timeout) => Ended::Overran,
            exit = self.child.wait() => Ended::Exited(exit),
        };
        match ended {
            Ended::Settled(outcome) => Ok(outcome.context("the emulator dropped the invocation")?),
            Ended::Overran => {
                lock(&self.shared.waiting).remove(&id);
                self.kill().await;
                Ok(Outcome::TimedOut)
            }
            Ended::Exited(exit) => {
                bail!("shale-lambda exited ({exit:?}) during an invocation:\n{}", self.log())
            }
        }
    }

    /// What the function reported to `/runtime/init/error`.
    pub fn init_errors(&self) -> Vec<Value> {
        lock(&self.shared.init_errors).clone()
    }

    /// Time since the process was spawned.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A Function URL (payload 2.0) event; `body` goes base64 when `binary`.
pub fn http_event(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    binary: bool,
) -> Value {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let header_map: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), Value::String((*v).to_owned()))).collect();
    let params: serde_json::Map<String, Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), Value::String(v.to_owned()))
        })
        .collect();
    let (body, encoded) = match body {
        None => (Value::Null, false),
        Some(b) if binary => (Value::String(STANDARD.encode(b)), true),
        Some(b) => (Value::String(String::from_utf8_lossy(b).into_owned()), false),
    };
    let now = now_ms();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": header_map,
        "queryStringParameters": if params.is_empty() { Value::Null } else { Value::Object(params) },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "shaletest",
            "domainName": "shaletest.lambda-url.us-east-1.on.aws",
            "domainPrefix": "shaletest",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "shale-tests"},
            "requestId": ulid::Ulid::new().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "02/Dec/2026:12:00:00 +0000",
            "timeEpoch": now,
        },
        "body": body,
        "isBase64Encoded": encoded,
    })
}

/// An API Gateway HTTP API (payload 2.0) event for the `$default` stage
/// and an `ANY /{proxy+}` route: the Function URL event as API Gateway
/// sends it.
pub fn http_api_event(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    binary: bool,
) -> Value {
    let mut event = http_event(method, path_and_query, headers, body, binary);
    let path = event["rawPath"].as_str().unwrap_or("/").to_owned();
    event["routeKey"] = json!("ANY /{proxy+}");
    event["pathParameters"] = json!({"proxy": path.trim_start_matches('/')});
    event["requestContext"]["routeKey"] = json!("ANY /{proxy+}");
    event["requestContext"]["apiId"] = json!("a1b2c3d4e5");
    event["requestContext"]["accountId"] = json!("000000000000");
    event["requestContext"]["domainName"] = json!("a1b2c3d4e5.execute-api.us-east-1.amazonaws.com");
    event["requestContext"]["domainPrefix"] = json!("a1b2c3d4e5");
    event
}

/// An EventBridge scheduled event.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": ulid::Ulid::new().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": "2026-12-02T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:000000000000:rule/shale-compactor"],
        "detail": {},
    })
}

/// A gateway function's answer: status, headers, body bytes.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: serde_json::Map<String, Value>,
    pub body: Vec<u8>,
    pub base64: bool,
}

impl HttpAnswer {
    pub fn from_outcome(outcome: Outcome) -> anyhow::Result<Self> {
        let Outcome::Response(v) = outcome else { bail!("the function did not answer: {outcome:?}") };
        let status = v["statusCode"].as_u64().with_context(|| format!("no statusCode in {v}"))? as u16;
        let base64 = v["isBase64Encoded"].as_bool().unwrap_or(false);
        let text = v["body"].as_str().unwrap_or_default();
        let body = if base64 { STANDARD.decode(text)? } else { text.as_bytes().to_vec() };
        let headers = v["headers"].as_object().cloned().unwrap_or_default();
        Ok(Self { status, headers, body, base64 })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}
