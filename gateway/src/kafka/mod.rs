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
mod errors;
mod groups;
mod metadata;
mod records;
mod requests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use shale_controller_client::auth::Principal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;
use crate::auth::AuthMode;
use crate::serve::{ServeLimits, accept};

pub use requests::SUPPORTED;

/// Where clients are told to connect (this gateway's Kafka address), and
/// the limits HTTP connections have too: TLS, the connection cap, the idle
/// timeout, and the header timeout for TLS handshakes.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub host: String,
    pub port: u16,
    pub limits: ServeLimits,
}

/// The node id every gateway answers as.
pub const NODE_ID: i32 = 0;
/// The cluster id in Metadata answers.
pub const CLUSTER_ID: &str = "shale";
/// Longest request frame accepted, over the gateway's request limit: room
/// for the request's own framing around its records.
const FRAME_SLACK: usize = 1 << 20;

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

/// Accepts Kafka connections until `shutdown` is cancelled: at most
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
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &slots) => accepted,
            () = shutdown.cancelled() => return,
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
        tokio::spawn(async move {
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
        let max_frame = self.state.config.max_request_bytes + FRAME_SLACK;
        let (reader, mut writer) = tokio::io::split(stream);
        let (frames_tx, mut frames) = tokio::sync::mpsc::channel(PIPELINE);
        let peer = self.peer;
        let frame_timeout = self.state.config.body_timeout;
        let reading = tokio::spawn(read_frames(reader, max_frame, frame_timeout, peer, frames_tx));
        let _reading = tokio_util::task::AbortOnDropHandle::new(reading);
        let idle_timeout = self.config.limits.idle_timeout;
        let mut idle_since = Instant::now();
        let mut pending = FuturesOrdered::new();
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
                    let key = frame.slice(0..2).get_i16();
                    let sasl = key == ApiKey::SaslHandshake as i16 || key == ApiKey::SaslAuthenticate as i16;
                    if self.principal.is_none() || sasl {
                        while let Some(outcome) = pending.next().await {
                            if !write(&mut writer, outcome).await {
                                return;
                            }
                        }
                        let outcome = self.handle(frame).await;
                        if !write(&mut writer, outcome).await {
                            return;
                        }
                    } else {
                        let mut session = self.clone();
                        pending.push_back(async move { session.handle(frame).await });
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
        // the client stopped sending: answer what it already asked
        while let Some(outcome) = pending.next().await {
            if !write(&mut writer, outcome).await {
                return;
            }
        }
    }

    /// Decodes, answers and encodes one request; None closes the connection
    /// (a frame that names no API this crate knows, or cannot be decoded).
    async fn handle(&mut self, mut frame: Bytes) -> Option<Outcome> {
        let (key, version) = (frame.slice(0..2).get_i16(), frame.slice(2..4).get_i16());
        let correlation_id = frame.slice(4..8).get_i32();
        let Ok(api_key) = ApiKey::try_from(key) else {
            tracing::debug!(peer = %self.peer, key, "kafka request of an unknown API: closing");
            return None;
        };
        let answer = |response: requests::Response, version: i16| {
            encode(api_key, version, correlation_id, &response).map(Outcome::Answer)
        };
        if !requests::supports(api_key, version) {
            // ApiVersions at a version we lack is answered at v0 with the list,
            // so the client can pick one; anything else gets UNSUPPORTED_VERSION
            // at its own version when that can be encoded
            let (response, at) = requests::unsupported(api_key, version);
            return at.and_then(|v| answer(response, v));
        }
        let header = match RequestHeader::decode(&mut frame, api_key.request_header_version(version)) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "kafka request header malformed: closing");
                return None;
            }
        };
        let request = match requests::Request::decode(api_key, &mut frame, version) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(peer = %self.peer, ?api_key, version, error = %e, "kafka request malformed");
                return answer(requests::invalid(api_key), version);
            }
        };
        let started = std::time::Instant::now();
        let outcome = self.dispatch(&header, request, version).await;
        tracing::trace!(?api_key, version, elapsed = ?started.elapsed(), "kafka request");
        match outcome {
            requests::Handled::Answer(r) => answer(r, version),
            requests::Handled::Silent => Some(Outcome::Silent),
            requests::Handled::Close(r) => encode(api_key, version, correlation_id, &r).map(Outcome::Close),
        }
    }
}

/// Reads length-prefixed frames into `frames` until the connection ends,
/// sends a frame of a size no request has, or takes longer than
/// `frame_timeout` to send a frame it started.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    max_frame: usize,
    frame_timeout: Duration,
    peer: SocketAddr,
    frames: tokio::sync::mpsc::Sender<Bytes>,
) {
    loop {
        let mut len = [0u8; 4];
        // the wait for a frame's first byte is the session's idle timeout
        if reader.read_exact(&mut len[..1]).await.is_err() {
            return;
        }
        let rest = async {
            reader.read_exact(&mut len[1..]).await.ok()?;
            let n = usize::try_from(i32::from_be_bytes(len)).ok().filter(|n| (8..=max_frame).contains(n));
            let Some(n) = n else {
                tracing::debug!(%peer, len = i32::from_be_bytes(len), "kafka frame of a size no request has: closing");
                return None;
            };
            let mut frame = BytesMut::zeroed(n);
            reader.read_exact(&mut frame).await.ok()?;
            Some(frame.freeze())
        };
        let frame = match tokio::time::timeout(frame_timeout, rest).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%peer, "kafka frame not received whole in time: closing");
                return;
            }
        };
        if frames.send(frame).await.is_err() {
            return;
        }
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
