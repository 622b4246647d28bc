//! The daemon's live stream (PROTOCOL §12): a thread that keeps `GET /api/sync/events` open and
//! asks the daemon to sync the moment the server says something is pending for this node.
//!
//! The stream only says *when*; the exchange still carries *what*, so a lost event costs
//! latency, never data: while the stream is down the daemon polls at its ordinary interval, and
//! every (re)connection starts with a `pending` event, which covers whatever was missed.
//!
//! The thread holds the node only weakly (a desktop program that drops its last [`Node`] closes
//! its database; the thread then ends) and never calls user code: it sets the daemon's flags and
//! emits [`NodeEvent::LiveStream`] on the event channel, outside any lock.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::events::NodeEvent;
use crate::transport::TransportError;
use crate::{Inner, Node};

/// What the daemon and its stream thread share.
#[derive(Default)]
pub(crate) struct LiveState {
    /// Set when the daemon stops: the thread ends after its current read (at most one
    /// keep-alive, 25 s, later).
    pub stop: AtomicBool,
    /// The stream is open and has said its first `pending`: the daemon may poll slowly.
    pub connected: AtomicBool,
}

/// First wait before reconnecting; doubles per failed attempt up to [`RECONNECT_MAX`].
const RECONNECT_BASE: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Starts the stream thread of a daemon.
pub(crate) fn spawn(node: &Node) -> Arc<LiveState> {
    let state = Arc::new(LiveState::default());
    let weak = Arc::downgrade(&node.inner);
    let shared = state.clone();
    let spawned = std::thread::Builder::new()
        .name("starsync-node-events".into())
        .spawn(move || run(&weak, &shared));
    if let Err(e) = spawned {
        // No stream: the daemon polls, as it did before streams existed.
        tracing::warn!(error = %e, "cannot start the event stream thread; polling instead");
    }
    state
}

/// Connects, reads, reconnects with capped, jittered backoff, until stopped or the node is gone.
fn run(weak: &Weak<Inner>, state: &LiveState) {
    let mut failures: u32 = 0;
    while !state.stop.load(Ordering::SeqCst) {
        let Some(node) = weak.upgrade().map(|inner| Node { inner }) else {
            return;
        };
        let opened = node.config().map_err(|e| e.to_string()).and_then(|cfg| {
            node.inner
                .transport
                .events(&cfg.server_url, &cfg.auth_token)
                .map_err(|e| describe(&e))
        });
        // Not held while reading: the stream must not keep the node (and its database) open.
        drop(node);
        match opened {
            Ok(None) => {
                tracing::info!("this transport has no event stream; the daemon polls");
                return;
            }
            Ok(Some(reader)) => {
                if read(weak, state, reader) {
                    failures = 0;
                }
                if state.connected.swap(false, Ordering::SeqCst) {
                    if let Some(inner) = weak.upgrade() {
                        let node = Node { inner };
                        node.inner
                            .events
                            .emit(NodeEvent::LiveStream { connected: false });
                        // The daemon's schedule depends on the stream: let it look again.
                        node.wake_daemon();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "event stream: cannot connect"),
        }
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        failures = failures.saturating_add(1);
        let wait = reconnect_delay(failures);
        tracing::debug!(
            retry_in_ms = wait.as_millis() as u64,
            "event stream closed; reconnecting"
        );
        let until = Instant::now() + wait;
        while Instant::now() < until && !state.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
    }
}

/// Reads one open stream until it ends, fails or the daemon stops. True when it delivered at
/// least one event (the connection worked, so the next attempt starts without backoff).
fn read(weak: &Weak<Inner>, state: &LiveState, mut reader: crate::transport::EventStream) -> bool {
    let mut event = String::new();
    let mut data = String::new();
    let mut line = String::new();
    let mut delivered = false;
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return delivered;
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return delivered,
            Ok(_) => {}
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            if !data.is_empty() || !event.is_empty() {
                let Some(inner) = weak.upgrade() else {
                    return delivered;
                };
                dispatch(&Node { inner }, state, &event, &data);
                delivered = true;
            }
            event.clear();
            data.clear();
        } else if let Some(v) = field(text, "event") {
            event = v.to_string();
        } else if let Some(v) = field(text, "data") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v);
        }
        // Comments (`: keep-alive`) and unknown fields are ignored, as SSE says.
    }
}

/// The value of an SSE field line `name: value` (one optional space after the colon).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Acts on one event: `pending` with something to receive wakes the daemon to sync now.
fn dispatch(node: &Node, state: &LiveState, event: &str, data: &str) {
    if event != "pending" {
        return;
    }
    if !state.connected.swap(true, Ordering::SeqCst) {
        node.inner
            .events
            .emit(NodeEvent::LiveStream { connected: true });
        // Polling slows down now; the daemon recomputes its schedule.
        node.wake_daemon();
    }
    let pending = serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("pending_changes")?.as_i64());
    // Unknown count (a newer server's format): sync, to be safe.
    if !matches!(pending, Some(n) if n <= 0) {
        node.request_sync();
    }
}

/// Capped exponential backoff with jitter (half to all of the step), so a server restart does
/// not see every node reconnect in the same instant.
fn reconnect_delay(failures: u32) -> Duration {
    let step = RECONNECT_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RECONNECT_MAX);
    let noise = RandomState::new().hash_one(Instant::now()) % 1_000;
    step / 2 + step.mul_f64(noise as f64 / 2_000.0)
}

fn describe(e: &TransportError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for f in 1..40 {
            let d = reconnect_delay(f);
            assert!(d <= RECONNECT_MAX, "{f}: {d:?}");
            assert!(d >= RECONNECT_BASE / 2, "{f}: {d:?}");
        }
        assert!(reconnect_delay(30) >= RECONNECT_MAX / 2);
    }

    #[test]
    fn sse_fields() {
        assert_eq!(field("event: pending", "event"), Some("pending"));
        assert_eq!(field("data:{\"a\":1}", "data"), Some("{\"a\":1}"));
        assert_eq!(field(": keep-alive", "data"), None);
        assert_eq!(field("datum: x", "data"), None);
    }
}
