//! Background syncing: periodically, at once after a local write, and with capped exponential
//! backoff while the server is unreachable (probing it cheaply so the node syncs as soon as it
//! answers again).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::sync::backoff;
use super::types::SyncReport;
use super::{Node, NodeError};

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Time between syncs when nothing happens.
    pub interval: Duration,
    /// First backoff delay after a failed sync; doubles per failure up to `max_backoff`.
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    /// While backing off from an unreachable server, probe `GET /health` this often.
    pub probe_interval: Duration,
    /// How often to look for changes written by another process (the CLI beside a daemon).
    pub poll_interval: Duration,
    /// Keep the server's event stream open (PROTOCOL §12) and sync the moment it says
    /// something is pending. Off: poll every `interval` only.
    pub stream: bool,
    /// Time between syncs when nothing happens while the stream is open: a safety net (the
    /// stream announces every change), so much longer than `interval`, which applies while the
    /// stream is down.
    pub stream_interval: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            interval: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            probe_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            stream: true,
            stream_interval: Duration::from_secs(300),
        }
    }
}

/// What one daemon round did (for logs and UIs).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DaemonTick {
    Synced {
        report: SyncReport,
    },
    Failed {
        error: String,
        retryable: bool,
        failures: u32,
        retry_in_secs: f64,
    },
}

/// A daemon running on its own thread; [`DaemonHandle::stop`] (or dropping it) stops it after
/// the current exchange.
pub struct DaemonHandle {
    node: Node,
    thread: Option<std::thread::JoinHandle<Result<(), NodeError>>>,
}

impl DaemonHandle {
    pub fn stop(mut self) -> Result<(), NodeError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), NodeError> {
        let Some(t) = self.thread.take() else {
            return Ok(());
        };
        self.node.request_stop();
        let r = t
            .join()
            .unwrap_or_else(|_| Err(NodeError::Protocol("the daemon thread panicked".into())));
        self.node.clear_stop();
        r
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

impl Node {
    /// Starts [`Node::run_daemon`] on a background thread.
    pub fn spawn_daemon(&self, opts: DaemonOptions) -> DaemonHandle {
        let node = self.clone();
        let thread = std::thread::Builder::new()
            .name("starsync-node-daemon".into())
            .spawn(move || node.run_daemon(opts, &mut |_| {}))
            .expect("spawning a thread");
        DaemonHandle {
            node: self.clone(),
            thread: Some(thread),
        }
    }

    /// Syncs until [`Node::request_stop`] is called: at start, at once when the server's event
    /// stream says something is pending for this node (`opts.stream`), right after a local
    /// write made through this handle (or a clone), at once after [`Node::request_sync`], soon
    /// after changes another process queued, and every `interval` while the stream is down
    /// (`stream_interval` while it is open). Failures back off exponentially (capped); while the
    /// server is unreachable a cheap probe notices when it answers again. Returns when stopped.
    pub fn run_daemon(
        &self,
        opts: DaemonOptions,
        on_tick: &mut dyn FnMut(&DaemonTick),
    ) -> Result<(), NodeError> {
        let live = opts.stream.then(|| super::live::spawn(self));
        let _stop_live = StopLive(live.clone());
        let interval = || match &live {
            Some(l) if l.connected.load(Ordering::SeqCst) => opts.stream_interval,
            _ => opts.interval,
        };
        // The periodic sync is due `interval()` after the last successful one (recomputed each
        // round: the stream going down brings it forward); after a failure, the backoff.
        let mut last_ok: Option<Instant> = None;
        let mut next_due = Instant::now();
        let mut failures: u32 = 0;
        let mut last_retryable = false;
        let mut last_probe = Instant::now();
        let mut last_poll = Instant::now();
        let mut seen_writes = *self.inner.writes.lock();
        loop {
            if self.inner.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = Instant::now();
            // Always taken, so a request made while a sync was due anyway is not served twice.
            let requested = self.inner.sync_requested.swap(false, Ordering::SeqCst);
            if failures == 0 {
                if let Some(t) = last_ok {
                    next_due = t + interval();
                }
            }
            let mut due = now >= next_due || requested;
            if !due && failures == 0 {
                if *self.inner.writes.lock() != seen_writes {
                    due = true;
                } else if now.duration_since(last_poll) >= opts.poll_interval {
                    last_poll = now;
                    due = self.inner.store.pending_count()? > 0;
                }
            }
            if !due
                && failures > 0
                && last_retryable
                && now.duration_since(last_probe) >= opts.probe_interval
            {
                last_probe = now;
                let cfg = self.config()?;
                if self.inner.transport.health(&cfg.server_url).is_ok() {
                    tracing::info!("server answers again; syncing now");
                    due = true;
                }
            }
            if due {
                seen_writes = *self.inner.writes.lock();
                let tick = match self.sync() {
                    Ok(report) => {
                        failures = 0;
                        last_ok = Some(Instant::now());
                        next_due = Instant::now() + interval();
                        DaemonTick::Synced { report }
                    }
                    Err(e) => {
                        failures += 1;
                        last_retryable = e.is_retryable();
                        last_probe = Instant::now();
                        let wait = backoff(opts.backoff_base, opts.max_backoff, failures);
                        next_due = Instant::now() + wait;
                        DaemonTick::Failed {
                            error: e.to_string(),
                            retryable: last_retryable,
                            failures,
                            retry_in_secs: wait.as_secs_f64(),
                        }
                    }
                };
                on_tick(&tick);
                continue;
            }
            let mut wake_at = next_due.min(now + opts.poll_interval);
            if failures > 0 && last_retryable {
                wake_at = wake_at.min(last_probe + opts.probe_interval);
            }
            let mut guard = self.inner.writes.lock();
            if *guard == seen_writes
                && !self.inner.stop.load(Ordering::SeqCst)
                && !self.inner.sync_requested.load(Ordering::SeqCst)
            {
                self.inner.wake.wait_until(&mut guard, wake_at);
            }
        }
    }
}

/// Stops the daemon's stream thread when the daemon returns, however it returns.
struct StopLive(Option<std::sync::Arc<super::live::LiveState>>);

impl Drop for StopLive {
    fn drop(&mut self) {
        if let Some(l) = &self.0 {
            l.stop.store(true, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use starsync_protocol::api::{
        ConflictList, ExchangeRequest, ExchangeResponse, NodeStatus, RegisterRequest,
        RegisterResponse, ServerStatus,
    };

    use super::*;
    use crate::{InitOptions, NodeOptions, Transport, TransportError};

    /// A server that registers nodes, then is never reachable again; counts exchange attempts.
    #[derive(Default)]
    struct Down {
        exchanges: AtomicUsize,
    }

    impl Transport for Down {
        fn register(
            &self,
            _: &str,
            _: Option<&str>,
            _: &RegisterRequest,
        ) -> Result<RegisterResponse, TransportError> {
            Ok(RegisterResponse {
                node_id: "node-1".into(),
                auth_token: "token".into(),
                server_node_id: "server-1".into(),
                server_version: "test".into(),
                schema_version: "1.0.0".into(),
            })
        }
        fn exchange(
            &self,
            _: &str,
            _: &str,
            _: &ExchangeRequest,
        ) -> Result<ExchangeResponse, TransportError> {
            self.exchanges.fetch_add(1, Ordering::SeqCst);
            Err(TransportError::Network("connection refused".into()))
        }
        fn node_status(&self, _: &str, _: &str, _: &str) -> Result<NodeStatus, TransportError> {
            Err(TransportError::Network("down".into()))
        }
        fn server_status(&self, _: &str, _: &str) -> Result<ServerStatus, TransportError> {
            Err(TransportError::Network("down".into()))
        }
        fn conflicts(&self, _: &str, _: &str, _: &str) -> Result<ConflictList, TransportError> {
            Err(TransportError::Network("down".into()))
        }
        fn health(&self, _: &str) -> Result<(), TransportError> {
            Err(TransportError::Network("down".into()))
        }
    }

    #[test]
    fn request_sync_cuts_a_backoff_short() {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(Down::default());
        let mut opts = InitOptions::register("http://127.0.0.1:9", "A");
        opts.max_retries = 0;
        let node =
            Node::init_with(dir.path(), opts, Some(down.clone()), NodeOptions::default()).unwrap();
        // Backoff and interval far longer than the test: only request_sync can cause a retry.
        let handle = node.spawn_daemon(DaemonOptions {
            interval: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            probe_interval: Duration::from_secs(3600),
            poll_interval: Duration::from_millis(20),
            stream: false,
            stream_interval: Duration::from_secs(3600),
        });
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while down.exchanges.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "no exchange attempt number {n}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(1);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(down.exchanges.load(Ordering::SeqCst), 1, "backing off");
        node.request_sync();
        wait_for(2);
        handle.stop().unwrap();
    }
}
