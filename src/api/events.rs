//! `GET /api/sync/events`: the live-notification stream (PROTOCOL §12, Server-Sent Events).
//!
//! The handler authenticates, takes a place in the engine's [`LiveHub`](crate::engine::live)
//! (or answers 503 `too_many_streams`), and spawns one small task per stream that sleeps until
//! the hub wakes it: no timer polls the database, a commit wakes only the streams it concerns.
//! A node's task counts `pending_changes` only when it is about to send an event, at most one
//! per [`COALESCE`].

use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::future::{select, Either};
use tokio::sync::mpsc;

use super::error::ApiResult;
use super::extract::{bearer, blocking};
use crate::engine::live::{AdminSignal, NodeSignal, StreamTicket, Wake};
use crate::engine::{Caller, Engine};

/// At most one `pending` event per stream this often (PROTOCOL §12): a burst of commits costs a
/// node one exchange, and the server one count.
pub const COALESCE: Duration = Duration::from_millis(100);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/events").route(web::get().to(events)));
}

/// The event stream: `pending` events for a node token, `exchange`/`conflict`/`node` events
/// for the admin token.
#[utoipa::path(get, path = "/api/sync/events", operation_id = "events", tag = "sync",
    description = "Server-Sent Events (PROTOCOL §12). With a node token: `event: pending` with \
        `data: {\"pending_changes\": n, \"cursor\": c}` at once and whenever a change the node \
        may receive is committed (at most one per 100 ms). With the admin token: `exchange`, \
        `conflict` and `node` events. A comment line every 25 s. The stream does not end by \
        itself.",
    responses((status = 200, description = "An endless `text/event-stream`", content_type = "text/event-stream", body = String)),
    security(("node_token" = []), ("admin_token" = [])))]
async fn events(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let token = bearer(&req);
    let caller = blocking(&engine, move |e| e.authenticate(token.as_deref())).await?;
    // A small buffer: the task waits (asynchronously) for a slow client instead of piling up
    // events; a `pending` event supersedes the ones before it anyway.
    let (tx, rx) = mpsc::channel(4);
    let wake = match caller {
        Caller::Node(node) => {
            let (ticket, signal) = engine.open_node_stream(&node)?;
            tracing::debug!(node = %node.code, open = engine.live().open_streams(), "event stream opened");
            let wake = signal.wake.clone();
            actix_web::rt::spawn(node_stream(engine.clone(), ticket, signal, tx));
            wake
        }
        Caller::Admin => {
            let (ticket, signal) = engine.open_admin_stream()?;
            let wake = signal.wake.clone();
            let keep_alive = Duration::from_secs(engine.settings().server.event_keepalive_secs);
            actix_web::rt::spawn(admin_stream(ticket, signal, tx, keep_alive));
            wake
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // nginx buffers responses by default; an event held in a proxy is a late event.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(EventBody { rx, wake }))
}

/// The response body: what the stream's task sends. Dropping it (the client hung up, the
/// server stops) ends the task at once, which frees the stream's place in the limit, instead
/// of at its next keep-alive.
struct EventBody {
    rx: mpsc::Receiver<web::Bytes>,
    wake: Arc<Wake>,
}

impl futures_util::Stream for EventBody {
    type Item = Result<web::Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx).map(|b| b.map(Ok))
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.wake.end();
    }
}

/// What the stream's task waits for next.
enum Woken {
    Notified,
    KeepAlive,
}

/// Sleeps until the hub wakes the stream or the keep-alive is due.
/// The keep-alive comment (`server.event_keepalive_secs`, 25 s by default) keeps proxies from
/// closing a quiet stream, and is how the server notices a client that went away without
/// closing its connection: actix sees a vanished peer only when a write fails.
async fn wait(wake: &Wake, keep_alive: Duration) -> Woken {
    let notified = pin!(wake.notify.notified());
    let timer = pin!(actix_web::rt::time::sleep(keep_alive));
    match select(notified, timer).await {
        Either::Left(_) => Woken::Notified,
        Either::Right(_) => Woken::KeepAlive,
    }
}

fn event(kind: &str, data: &str) -> web::Bytes {
    web::Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn comment(text: &str) -> web::Bytes {
    web::Bytes::from(format!(": {text}\n\n"))
}

/// A node's stream: `pending` at once, then after every wake-up that may concern it, no more
/// often than [`COALESCE`]; ends when the client goes, or the node is disabled or removed.
async fn node_stream(
    engine: web::Data<Engine>,
    ticket: StreamTicket,
    signal: Arc<NodeSignal>,
    tx: mpsc::Sender<web::Bytes>,
) {
    let keep_alive = Duration::from_secs(engine.settings().server.event_keepalive_secs);
    let mut last_sent: Option<Instant> = None;
    loop {
        if last_sent.is_some() {
            match wait(&signal.wake, keep_alive).await {
                _ if signal.wake.is_ended() => break,
                // Still dirty at a keep-alive: the last count failed (database unreachable);
                // try again now rather than at the next commit.
                Woken::KeepAlive if signal.dirty.load(Ordering::SeqCst) => {}
                Woken::KeepAlive => {
                    if tx.send(comment("keep-alive")).await.is_err() {
                        break;
                    }
                    continue;
                }
                Woken::Notified if !signal.dirty.load(Ordering::SeqCst) => continue,
                Woken::Notified => {}
            }
            if let Some(wait) = last_sent.and_then(|t| COALESCE.checked_sub(t.elapsed())) {
                actix_web::rt::time::sleep(wait).await;
            }
            if signal.wake.is_ended() {
                break;
            }
        }
        // Cleared before counting: a commit that lands while we count sets it again, and the
        // stream sends once more.
        signal.dirty.store(false, Ordering::SeqCst);
        let node_id = signal.view.node_id.clone();
        let counted = {
            let Ok(_turn) = engine.live().counting.acquire().await else {
                break;
            };
            blocking(&engine, move |e| e.live_pending(&node_id)).await
        };
        last_sent = Some(Instant::now());
        let data = match counted {
            Ok(Some((pending, cursor))) => {
                // Written out so the fields keep PROTOCOL §12's order.
                format!("{{\"pending_changes\":{pending},\"cursor\":{cursor}}}")
            }
            // Disabled or removed: its token no longer opens streams.
            Ok(None) => break,
            Err(e) => {
                // The database is unreachable: try again at the next wake-up or keep-alive
                // (the node syncs at its next poll meanwhile; nothing is lost, only late).
                tracing::warn!(error = %e, "event stream: cannot count pending changes");
                signal.dirty.store(true, Ordering::SeqCst);
                continue;
            }
        };
        if tx.send(event("pending", &data)).await.is_err() {
            break;
        }
    }
    drop(ticket);
}

/// A dashboard's stream: every admin event, in commit order per process, as it comes.
async fn admin_stream(
    ticket: StreamTicket,
    signal: Arc<AdminSignal>,
    tx: mpsc::Sender<web::Bytes>,
    keep_alive: Duration,
) {
    // A first line at once, so the dashboard knows the stream is live.
    if tx.send(comment("admin events")).await.is_err() {
        return;
    }
    loop {
        let woken = wait(&signal.wake, keep_alive).await;
        if signal.wake.is_ended() {
            break;
        }
        if let Woken::KeepAlive = woken {
            if tx.send(comment("keep-alive")).await.is_err() {
                break;
            }
            continue;
        }
        let (events, dropped) = signal.take();
        if dropped > 0
            && tx
                .send(comment(&format!(
                    "{dropped} events dropped: the stream fell behind"
                )))
                .await
                .is_err()
        {
            break;
        }
        for e in events {
            if tx.send(event(&e.kind, &e.data.to_string())).await.is_err() {
                drop(ticket);
                return;
            }
        }
    }
    drop(ticket);
}
