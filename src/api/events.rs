//! `GET /client/events`: Server-Sent Events for `curl -N` and a browser
//! `EventSource`.
//!
//! The worker that routed the request subscribes (an `ApiCommand` that
//! `run` answers from its hub) and hands the request to a thread of its own
//! (`events-N`), so a stream never holds one of the few REST workers; the
//! hub caps streams at `hub::MAX_SUBSCRIBERS`. The thread writes the HTTP
//! head itself through tiny_http's raw writer, then each event as one
//! chunk, flushed at once: tiny_http's own `respond` would copy the body
//! through an 8 KiB chunk encoder and hold events back.
//!
//! Frames: `id: <seq>\nevent: <kind>\ndata: <one-line JSON>\n\n`; first a
//! `gap` event when a resume point is gone from the ring; a `: keepalive`
//! comment every `HEARTBEAT_INTERVAL`, so a client that is gone is noticed
//! (its write fails; a client that does not read fails a write after
//! `http::REST.write_timeout`). The stream ends when the hub drops the
//! subscriber (its queue was full: it may resume with `Last-Event-ID`)
//! and what was queued is written, at shutdown, or when a write fails; it
//! keeps its place under the cap until then.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{ask, dto, ApiError, Wait};
use crate::scheduler::hub::{Published, Subscription};
use crate::scheduler::{ApiCommand, ApiReply, ApiRequest};

/// A comment line goes out after this long without an event.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Events written before one flush, when several are waiting.
const MAX_BATCH: usize = 64;

/// Names the stream threads.
static NEXT_STREAM: AtomicU64 = AtomicU64::new(0);

/// Subscribes at the hub, resuming after `since`: 503 when at the cap or
/// the state thread is busy.
pub(super) fn subscribe(
    state: &Sender<ApiCommand>,
    since: Option<u64>,
) -> Result<Subscription, ApiError> {
    match ask(state, ApiRequest::Subscribe { since }, Wait::Read)? {
        ApiReply::Subscribed(subscription) => Ok(subscription),
        ApiReply::Unavailable(message) => Err(ApiError::Unavailable(message)),
        other => {
            log::error!("unexpected scheduler reply to a subscribe reply={other:?}");
            Err(ApiError::Internal(
                "unexpected reply from the scheduler".to_string(),
            ))
        }
    }
}

/// Starts the stream's thread; if it cannot start, the request is
/// answered 503.
pub(super) fn start(request: tiny_http::Request, subscription: Subscription) {
    let number = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    // The request goes to the thread through this slot, so a failed spawn
    // leaves it here to be answered.
    let slot = Arc::new(Mutex::new(Some(request)));
    let for_thread = Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name(format!("events-{number}"))
        .spawn(move || {
            let taken = for_thread.lock().ok().and_then(|mut slot| slot.take());
            if let Some(request) = taken {
                stream(request, subscription);
            }
        });
    if let Err(err) = spawned {
        log::warn!("event stream thread not started error={err}");
        let taken = slot.lock().ok().and_then(|mut slot| slot.take());
        if let Some(request) = taken {
            let error = ApiError::Unavailable("could not start the event stream".to_string());
            let layout = super::Layout::of_request(&request);
            let _ = request.respond(super::into_response(error.into_reply(), layout));
        }
    }
}

/// One event as SSE text.
fn frame(published: &Published) -> String {
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        published.seq,
        published.notice.kind.name(),
        dto::notice_json(published)
    )
}

/// Writes SSE text, as HTTP/1.1 chunks (one per write) or raw for HTTP/1.0.
struct Body {
    writer: Box<dyn Write + Send>,
    chunked: bool,
}

impl Body {
    fn write(&mut self, text: &str) -> std::io::Result<()> {
        if self.chunked {
            write!(self.writer, "{:x}\r\n{text}\r\n", text.len())
        } else {
            self.writer.write_all(text.as_bytes())
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    /// The last chunk: a client sees the stream end cleanly.
    fn finish(mut self) {
        if self.chunked {
            let _ = self.writer.write_all(b"0\r\n\r\n");
        }
        let _ = self.writer.flush();
    }
}

/// The `events-N` thread: head, gap, backlog, then the feed until it ends
/// or a write fails.
fn stream(request: tiny_http::Request, subscription: Subscription) {
    let peer = request
        .remote_addr()
        .map_or_else(|| "unknown".to_string(), |addr| addr.to_string());
    let version = request.http_version();
    let chunked = (version.0, version.1) >= (1, 1);
    let status_line = if chunked {
        "HTTP/1.1 200 OK"
    } else {
        "HTTP/1.0 200 OK"
    };
    let mut writer = request.into_writer();
    let head = format!(
        "{status_line}\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n{}\r\n",
        if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            ""
        }
    );
    if writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.flush())
        .is_err()
    {
        return;
    }
    let mut body = Body { writer, chunked };
    log::info!(
        "event stream opened peer={peer} backlog={} gap={}",
        subscription.backlog.len(),
        subscription.gap.is_some()
    );
    let Subscription { gap, backlog, feed } = subscription;
    let mut opening = String::from(": charmander events\n\n");
    if let Some(gap) = gap {
        opening.push_str(&format!("event: gap\ndata: {}\n\n", dto::gap_json(&gap)));
    }
    if body.write(&opening).is_err() {
        return;
    }
    for published in &backlog {
        if body.write(&frame(published)).is_err() {
            return;
        }
    }
    drop(backlog);
    if body.flush().is_err() {
        return;
    }
    let ended = loop {
        match feed.receiver.recv_timeout(HEARTBEAT_INTERVAL) {
            Ok(published) => {
                let mut batch = frame(&published);
                for published in feed.receiver.try_iter().take(MAX_BATCH - 1) {
                    batch.push_str(&frame(&published));
                }
                if body.write(&batch).and_then(|()| body.flush()).is_err() {
                    break "write failed";
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if body
                    .write(": keepalive\n\n")
                    .and_then(|()| body.flush())
                    .is_err()
                {
                    break "write failed";
                }
            }
            // Dropped by the hub (too slow) or shut down.
            Err(RecvTimeoutError::Disconnected) => break "feed ended",
        }
    };
    log::info!("event stream closed peer={peer} why={ended:?}");
    if ended == "feed ended" {
        body.finish();
    } else {
        drop(body);
    }
    // The hub counts this stream under `MAX_SUBSCRIBERS` until the feed
    // goes: only once the writer is let go of.
    drop(feed);
}
