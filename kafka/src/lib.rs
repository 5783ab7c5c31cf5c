//! The Kafka listener (`--kafka-listen`): Kafka's wire protocol over TCP
//! (or TLS), decoded and encoded by the `kafka-protocol` crate, on top of
//! the same produce, fetch, topic and group paths as the HTTP API.
//!
//! - Every gateway answers as the one broker of the cluster (node 0, at its
//!   advertised address): the leader of every partition and the
//!   coordinator of every group. Offsets come from the controller, so any
//!   gateway may take any partition's writes.
//! - Requests on a connection are answered in order; up to 16 run at once
//!   once the connection is authenticated.
//! - With tokens on, a connection must authenticate with SASL/PLAIN (the
//!   password is a Shale token) before anything but ApiVersions.
//!
//! `docs/KAFKA.md` lists the APIs and how each maps onto Shale.

mod admin;
mod args;
mod configs;
mod consumer;
mod errors;
mod fuzz;
mod groups;
mod metadata;
mod offsets;
mod partitions;
mod records;
mod requests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use shale_controller_client::auth::Principal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use shale_gateway::AppState;
use shale_gateway::auth::AuthMode;
use shale_gateway::batcher::BufferPermit;
use shale_gateway::serve::{ServeLimits, accept};

pub use args::KafkaArgs;
pub use fuzz::request as fuzz_request;
pub use requests::SUPPORTED;

/// Where clients are told to connect (this gateway's Kafka address), and
/// the limits HTTP connections have too: TLS, the connection cap, the idle
/// timeout, and the header timeout for TLS handshakes.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub host: String,
    pub port: u16,
    pub limits: ServeLimits,
    /// Metadata for a topic that does not exist creates it (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a count (`num.partitions`).
    pub default_partitions: u32,
}

/// The node id every gateway answers as.
pub const NODE_ID: i32 = 0;
/// The cluster id in Metadata answers.
pub const CLUSTER_ID: &str = "shale";
/// Longest request frame accepted, over the gateway's request limit: room
/// for the request's own framing around its records.
pub(crate) const FRAME_SLACK: usize = 1 << 20;

/// Requests of one connection handled at once, answered in order.
const PIPELINE: usize = 16;

/// One connection's state.
#[derive(Clone)]
struct Session {
    state: Arc<AppState>,
    config: Arc<KafkaConfig>,
    peer: SocketAddr,
    /// Who authenticated (always someone when auth is off).
    principal: Option<Arc<Principal>>,
    /// The token it authenticated with: checked again at every request, so
    /// a revoked token stops working on open connections too.
    token: Option<String>,
    /// A SaslHandshake chose PLAIN.
    sasl_ready: bool,
}

/// What handling one request leads to.
enum Outcome {
    /// Send this answer and read the next request.
    Answer(BytesMut),
    /// Send nothing (a produce with acks=0) and read on.
    Silent,
    /// Send this answer, then close (a failed authentication).
    Close(BytesMut),
}

/// Accepts Kafka connections until `shutdown` is cancelled, then lets each
/// connection answer what it already read, for up to `drain_timeout`. At most
/// `--max-connections` at once (more wait in the backlog), each closed when
/// idle for `--idle-timeout-ms` with nothing in flight, or when a frame it
/// started does not arrive whole within `--body-timeout-ms`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    config: KafkaConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &slots) => accepted,
            () = shutdown.cancelled() => break,
        };
        let Some((stream, peer, slot)) = accepted else { continue };
        let principal = (state.auth.mode() == AuthMode::Off).then(|| Arc::new(Principal::anonymous()));
        let session = Session {
            state: state.clone(),
            config: config.clone(),
            peer,
            principal,
            token: None,
            sasl_ready: false,
        };
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            match session.config.limits.tls.clone() {
                None => session.run(stream, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(session.config.limits.header_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => session.run(stream, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "kafka tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "kafka tls handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    tracing::info!(connections = connections.len(), "draining kafka connections");
    let drain = config.limits.drain_timeout;
    if tokio::time::timeout(drain, connections.wait()).await.is_err() {
        tracing::warn!(timeout_ms = drain.as_millis() as u64, "kafka drain timed out; closing what is left");
    }
}

impl Session {
    /// Reads requests and answers them in order. Up to [`PIPELINE`] requests
    /// of an authenticated connection run at once (a producer's next batch
    /// does not wait for the previous commit); the SASL exchange, and
    /// everything before it, runs one request at a time.
    async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        mut self,
        stream: S,
        shutdown: CancellationToken,
    ) {
        let (reader, mut writer) = tokio::io::split(stream);
        let (frames_tx, mut frames) = tokio::sync::mpsc::channel(PIPELINE);
        let peer = self.peer;
        let frame_timeout = self.state.config.body_timeout;
        let reading = tokio::spawn(read_frames(reader, self.state.clone(), frame_timeout, peer, frames_tx));
        let _reading = tokio_util::task::AbortOnDropHandle::new(reading);
        let idle_timeout = self.config.limits.idle_timeout;
        let mut idle_since = Instant::now();
        let mut pending = FuturesOrdered::new();
        // produces reach the batcher in the order they arrived
        let mut last_produce: Option<oneshot::Receiver<()>> = None;
        loop {
            tokio::select! {
                done = pending.next(), if !pending.is_empty() => {
                    let Some(outcome) = done else { continue };
                    idle_since = Instant::now();
                    if !write(&mut writer, outcome).await {
                        return;
                    }
                }
                () = tokio::time::sleep_until(idle_since + idle_timeout), if pending.is_empty() => {
                    tracing::debug!(%peer, "kafka connection idle: closing");
                    return;
                }
                frame = frames.recv(), if pending.len() < PIPELINE => {
                    let Some(frame) = frame else { break };
                    idle_since = Instant::now();
                    let key = frame.bytes.slice(0..2).get_i16();
                    let sasl = key == ApiKey::SaslHandshake as i16 || key == ApiKey::SaslAuthenticate as i16;
                    let turn = (key == ApiKey::Produce as i16).then(|| {
                        let (done, next) = oneshot::channel();
                        Turn { after: last_produce.replace(next), done }
                    });
                    if self.principal.is_none() || sasl {
                        while let Some(outcome) = pending.next().await {
                            if !write(&mut writer, outcome).await {
                                return;
                            }
                        }
                        let outcome = self.handle(frame, turn).await;
                        if !write(&mut writer, outcome).await {
                            return;
                        }
                    } else {
                        let mut session = self.clone();
                        pending.push_back(async move { session.handle(frame, turn).await });
                    }
                }
                // shutting down: read no more, answer what was asked
                () = shutdown.cancelled() => break,
            }
        }
        // the client stopped sending, or the gateway is shutting down:
        // answer what it already asked
        while let Some(outcome) = pending.next().await {
            if !write(&mut writer, outcome).await {
                return;
            }
        }
    }

    /// Decodes, answers and encodes one request; None closes the connection
    /// (a frame that names no API this crate knows, or cannot be decoded).
    async fn handle(&mut self, frame: Frame, turn: Option<Turn>) -> Option<Outcome> {
        let Frame { bytes, room } = frame;
        let (api_key, version, header, request) = match requests::decode_frame(bytes) {
            requests::Decoded::Request { api_key, version, header, request } => {
                (api_key, version, header, request)
            }
            requests::Decoded::UnknownApi(key) => {
                tracing::debug!(peer = %self.peer, key, "kafka request of an unknown API: closing");
                return None;
            }
            requests::Decoded::BadHeader(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "kafka request header malformed: closing");
                return None;
            }
            // ApiVersions at a version we lack is answered at v0 with the list,
            // so the client can pick one; anything else gets UNSUPPORTED_VERSION
            // at its own version when that can be encoded
            requests::Decoded::Unsupported { api_key, version, correlation_id } => {
                let (response, at) = requests::unsupported(api_key, version);
                return at.and_then(|v| encode(api_key, v, correlation_id, &response).map(Outcome::Answer));
            }
            requests::Decoded::Malformed { api_key, version, correlation_id, error } => {
                tracing::debug!(peer = %self.peer, ?api_key, version, %error, "kafka request malformed");
                return encode(api_key, version, correlation_id, &requests::invalid(api_key))
                    .map(Outcome::Answer);
            }
        };
        let correlation_id = header.correlation_id;
        let answer = |response: requests::Response, version: i16| {
            encode(api_key, version, correlation_id, &response).map(Outcome::Answer)
        };
        let started = std::time::Instant::now();
        let outcome = self.dispatch(&header, *request, version, room, turn).await;
        tracing::trace!(?api_key, version, elapsed = ?started.elapsed(), "kafka request");
        match outcome {
            requests::Handled::Answer(r) => answer(r, version),
            requests::Handled::Silent => Some(Outcome::Silent),
            requests::Handled::Close(r) => encode(api_key, version, correlation_id, &r).map(Outcome::Close),
        }
    }
}

/// A produce's place in its connection's order: it hands its records to the
/// batcher after the produce before it did (`after`), then lets the next
/// one go (`done`, also when dropped). Requests of a connection run at once,
/// but one partition's batches are committed in the order they were sent,
/// as Kafka's ordering and idempotent producers' sequences need.
pub(crate) struct Turn {
    after: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl Turn {
    /// Waits for the produce before this one to have handed over its records.
    pub(crate) async fn wait(&mut self) {
        if let Some(after) = self.after.take() {
            // a dropped sender (the earlier produce failed early) also ends the wait
            let _ = after.await;
        }
    }

    /// Lets the next produce hand over its records.
    pub(crate) fn pass(self) {
        let _ = self.done.send(());
    }
}

/// A request's bytes, and the room they hold in the gateway's buffer from
/// the moment their length is read: frames waiting in a connection's
/// pipeline count against admission as HTTP bodies do.
struct Frame {
    bytes: Bytes,
    room: BufferPermit,
}

/// Reads length-prefixed frames into `frames` until the connection ends,
/// sends a frame of a size no request has, or takes longer than
/// `frame_timeout` to send a frame it started. Before a frame's body is
/// read, room for it is reserved in the buffer; while there is none the
/// connection is not read, which holds its producer back.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    state: Arc<AppState>,
    frame_timeout: Duration,
    peer: SocketAddr,
    frames: tokio::sync::mpsc::Sender<Frame>,
) {
    let max_frame = state.config.max_request_bytes + FRAME_SLACK;
    loop {
        let mut len = [0u8; 4];
        // the wait for a frame's first byte is the session's idle timeout
        if reader.read_exact(&mut len[..1]).await.is_err() {
            return;
        }
        let size = async {
            reader.read_exact(&mut len[1..]).await.ok()?;
            let n = usize::try_from(i32::from_be_bytes(len)).ok().filter(|n| (8..=max_frame).contains(n));
            if n.is_none() {
                tracing::debug!(%peer, len = i32::from_be_bytes(len), "kafka frame of a size no request has: closing");
            }
            n
        };
        let Ok(Some(n)) = tokio::time::timeout(frame_timeout, size).await else { return };
        let Some(room) = reserve(&state, n.min(state.config.max_request_bytes), None).await else { return };
        let mut frame = BytesMut::zeroed(n);
        match tokio::time::timeout(frame_timeout, reader.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(%peer, "kafka frame not received whole in time: closing");
                return;
            }
        }
        if frames.send(Frame { bytes: frame.freeze(), room }).await.is_err() {
            return;
        }
    }
}

/// Room for `bytes` in the gateway's buffer, waited for until `deadline`
/// (None: as long as it takes); None when the deadline passed first.
pub(crate) async fn reserve(
    state: &AppState,
    bytes: usize,
    deadline: Option<Instant>,
) -> Option<BufferPermit> {
    let waited_from = std::time::Instant::now();
    loop {
        if let Ok(permit) = state.batcher.reserve(bytes) {
            return Some(permit.since(waited_from));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends an answer (none for Silent); false when the connection is to end.
async fn write<W: AsyncWrite + Unpin>(writer: &mut W, outcome: Option<Outcome>) -> bool {
    let (answer, close) = match outcome {
        Some(Outcome::Answer(a)) => (Some(a), false),
        Some(Outcome::Silent) => (None, false),
        Some(Outcome::Close(a)) => (Some(a), true),
        None => (None, true),
    };
    if let Some(answer) = answer {
        let mut out = BytesMut::with_capacity(answer.len() + 4);
        out.put_u32(u32::try_from(answer.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&answer);
        if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
            return false;
        }
    }
    if close {
        let _ = writer.shutdown().await;
    }
    !close
}

/// The answer's bytes: its header (at the API's header version) and body.
fn encode(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &requests::Response,
) -> Option<BytesMut> {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encoded = header
        .encode(&mut buf, api_key.response_header_version(version))
        .and_then(|()| response.encode(&mut buf, version));
    match encoded {
        Ok(()) => Some(buf),
        Err(e) => {
            tracing::warn!(?api_key, version, error = %e, "encoding a kafka answer failed: closing");
            None
        }
    }
}
