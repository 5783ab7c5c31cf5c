//! Serving a router over HTTP/1.1 and HTTP/2 so that no client can hold the
//! server hostage:
//!
//! - a request head must arrive within `header_timeout` (hyper's header read
//!   timeout, which also bounds how long a keep-alive connection waits for
//!   its next request; a client that sends nothing at all gets the same);
//! - a connection with no bytes in either direction for `idle_timeout` is
//!   closed (longer than the longest long-poll, so a waiting fetch is safe);
//! - at most `max_connections` are open; further clients wait in the
//!   listen backlog;
//! - with TLS, the handshake must finish within `header_timeout` too;
//! - on shutdown the server stops accepting, lets requests in flight finish
//!   for up to `drain_timeout`, then closes what is left.
//!
//! Per-connection memory is bounded too: hyper's read buffer grows to ~400 KiB
//! per connection by default, so a thousand clients pushing bodies at an
//! overloaded gateway would hold hundreds of MiB before the buffer check could
//! refuse them; here it is capped, and the body is read only after admission
//! (see `api::produce`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Read buffer of one HTTP/1 connection at most.
pub const MAX_CONNECTION_BUFFER: usize = 16 * 1024;

/// How long clients may take, how many there may be, and TLS.
#[derive(Clone)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    /// Serve HTTPS with this acceptor.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ServeLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeLimits")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ServeLimits {
    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Accepts connections until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener, &slots) => accepted,
            () = &mut shutdown => break,
        };
        let Some((stream, peer, slot)) = accepted else { continue };
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            match limits.tls.clone() {
                None => serve_connection(stream, peer, service, watcher, &limits).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => serve_connection(tls, peer, service, watcher, &limits).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining connections");
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            timeout_ms = limits.drain_timeout.as_millis() as u64,
            "drain timed out; closing what is left"
        );
    }
    Ok(())
}

/// Serves one connection until it ends, idles out or is drained.
async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    service: TowerToHyperService<Router>,
    watcher: Watcher,
    limits: &ServeLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_CONNECTION_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(None);
    let conn = watcher.watch(builder.serve_connection_with_upgrades(io, service));
    tokio::pin!(conn);
    // a client that never sends a byte gets the header timeout, not the idle
    // one (hyper starts its timer at the first byte)
    let allowed = || if activity.heard() { limits.idle_timeout } else { limits.header_timeout };
    loop {
        let idle_left = allowed().saturating_sub(activity.idle());
        tokio::select! {
            result = &mut conn => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(idle_left) => {
                if activity.idle() >= allowed() {
                    tracing::debug!(%peer, "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// A client's connection, its address, and the slot it holds.
pub type Accepted = (TcpStream, std::net::SocketAddr, tokio::sync::OwnedSemaphorePermit);

/// Waits for a free connection slot, then for a client (HTTP and Kafka
/// listeners alike).
pub async fn accept(listener: &TcpListener, slots: &Arc<Semaphore>) -> Option<Accepted> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            // answers and streamed records go out as written, not held back
            // by Nagle's algorithm until the client acknowledges the last
            // write (as the Kafka listener does)
            let _ = stream.set_nodelay(true);
            Some((stream, peer, slot))
        }
        Err(e) => {
            // e.g. out of file descriptors: back off instead of spinning
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// When a connection last moved a byte, and whether the client sent any.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    heard: Arc<AtomicBool>,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)), heard: Arc::default() }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that records when bytes last moved.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            self.activity.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
