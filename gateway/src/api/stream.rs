//! Server-sent events: one event per batch of records, `id:` the cursor to
//! resume from (`Last-Event-ID`), a keep-alive comment every 15 s.
//!
//! Memory per stream is bounded: a stream is a lazy loop that reads the
//! next batch only when hyper asks for the next frame, which it does once
//! the last one is written to the socket. A slow reader holds one batch and
//! the socket's buffers. Streams are capped per gateway (`max_streams`), and
//! a gateway shutting down sends every stream a `reconnect` event, then
//! ends it, so clients move to another gateway before the drain closes them.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use shale_core::ErrorCode;
use tokio::sync::OwnedSemaphorePermit;

use super::{ApiError, AppState};

pub const CONTENT_TYPE: &str = "text/event-stream";
/// A comment at least this often keeps proxies and clients from timing out.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What a client is told to wait before reconnecting after `reconnect`.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

pub fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with(CONTENT_TYPE)))
}

pub fn last_event_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get("last-event-id")?.to_str().ok()?.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// A place among the gateway's open streams, or 429 when they are all taken.
pub fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    if state.config.max_streams == 0 {
        // shale-lambda: a Lambda answer is buffered whole, so a stream never would be
        return Err(ApiError::invalid(
            "this gateway serves no event streams (on Lambda answers are buffered): long-poll with wait_ms instead",
        ));
    }
    state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::Overloaded,
            format!(
                "this gateway serves at most {} streams; retry later or elsewhere",
                state.config.max_streams
            ),
        )
        .retry_after(Duration::from_secs(1))
    })
}

/// What one turn of a stream yields: an event, nothing yet (the loop turns
/// again; keep-alives cover the silence), or an error event that ends it.
pub enum Turn {
    Event(Event),
    Quiet,
    End(ApiError),
}

/// Serves `next` as a stream of events until it ends or the gateway shuts
/// down, holding `permit` for as long as the stream lives.
pub fn respond<S, F, Fut>(state: Arc<AppState>, permit: OwnedSemaphorePermit, seed: S, next: F) -> Response
where
    S: Send + 'static,
    F: FnMut(S) -> Fut + Send + 'static,
    Fut: Future<Output = (Turn, S)> + Send + 'static,
{
    Sse::new(events(state, permit, seed, next))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn events<S, F, Fut>(
    state: Arc<AppState>,
    permit: OwnedSemaphorePermit,
    seed: S,
    mut next: F,
) -> impl Stream<Item = Result<Event, Infallible>> + Send
where
    S: Send + 'static,
    F: FnMut(S) -> Fut + Send + 'static,
    Fut: Future<Output = (Turn, S)> + Send + 'static,
{
    state.metrics.open_streams.inc();
    let guard = StreamGuard { state: state.clone(), _permit: permit };
    futures::stream::unfold(Some((seed, guard)), move |slot| {
        let turn = slot.map(|(seed, guard)| {
            let closing = guard.state.closing.clone();
            let step = next(seed);
            async move {
                tokio::select! {
                    biased;
                    () = closing.cancelled() => None,
                    (turn, seed) = step => Some((turn, seed, guard)),
                }
            }
        });
        async move {
            let turn = turn?.await;
            let Some((turn, seed, guard)) = turn else {
                let event = Event::default().event("reconnect").retry(RECONNECT_AFTER).data("{}");
                return Some((Ok(event), None));
            };
            match turn {
                Turn::Event(event) => Some((Ok(event), Some((seed, guard)))),
                Turn::Quiet => Some((Ok(Event::default().comment("")), Some((seed, guard)))),
                Turn::End(e) => Some((Ok(Event::default().event("error").data(e.body_json())), None)),
            }
        }
    })
}

/// Counts the stream while it lives and holds its place.
struct StreamGuard {
    state: Arc<AppState>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.metrics.open_streams.dec();
    }
}
