//! The server's Prometheus metrics (`GET /metrics`, PROTOCOL §9), kept in one [`Metrics`]
//! value per process and handed to whoever records (app data in the HTTP layer), never a
//! global registry: two servers in one process (the tests run many) count apart.
//!
//! Each metric is recorded in one place: an exchange's outcome, latency, applied changes,
//! conflicts and rejections by [`Metrics::record_exchange`], called once by the exchange
//! handler; the node, pending, pool and writer gauges are read when scraped
//! ([`Metrics::render`]). Labels are typed ([`Outcome`], the protocol's `RejectReason`,
//! `Strategy` and `Winner`), so a label value is a wire name from the shared vocabulary,
//! never a string typed at the call site.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use starsync_protocol::api::{ChangeError, ConflictReport};
use starsync_protocol::{ErrorCode, RejectReason, Strategy, Winner};

use crate::engine::{Engine, EngineResult, HubGauges, ReceiveReport};

/// The `Content-Type` of the answer: the Prometheus text format 0.0.4, which every Prometheus
/// version and most agents (VictoriaMetrics, Grafana Alloy, Telegraf) read.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How long node and pending figures computed for one scrape are reused.
///
/// Why: they come from `store::pending::counts`, which streams the whole change log once
/// (0.16 s for 1,000 nodes each 100,000 changes behind; docs/design.md). Several Prometheus
/// servers, or a scrape every second, must not turn that into a steady load on the database:
/// within this window a scrape reuses the last figures, and while one scrape computes them
/// the others serve the previous ones instead of computing again (or waiting).
pub const HUB_GAUGES_TTL: Duration = Duration::from_secs(5);

/// How an exchange ended: its packet applied, recognised as a duplicate, or refused with an
/// error code (PROTOCOL §6) — the `outcome` label of `starsync_exchanges_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Applied,
    Duplicate,
    Error(ErrorCode),
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Error(code) => code.as_str(),
        })
    }
}

/// A label value from the protocol's vocabulary, or `unlisted` for the entries of a packet
/// past the first `engine::exchange::MAX_LISTED` rejected changes (or conflicts): the engine
/// lists only those, and counts the rest. A node's packet holds `batch_size` (100) changes by
/// default, so `unlisted` stays at 0 unless nodes send thousands of failing changes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listed<T> {
    Is(T),
    Unlisted,
}

macro_rules! wire_label {
    ($($t:ty),+) => {$(
        impl EncodeLabelValue for Listed<$t> {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(match self {
                    Listed::Is(v) => v.as_str(),
                    Listed::Unlisted => "unlisted",
                })
            }
        }
    )+};
}
wire_label!(RejectReason, Strategy, Winner);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConflictLabels {
    strategy: Listed<Strategy>,
    winner: Listed<Winner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    reason: Listed<RejectReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NodeState {
    Active,
    Disabled,
}

impl EncodeLabelValue for NodeState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            NodeState::Active => "active",
            NodeState::Disabled => "disabled",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabels {
    state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ConnState {
    InUse,
    Idle,
}

impl EncodeLabelValue for ConnState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            ConnState::InUse => "in_use",
            ConnState::Idle => "idle",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    state: ConnState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    backend: &'static str,
}

/// Every metric of one server process, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    exchanges: Family<OutcomeLabels, Counter>,
    exchange_seconds: Histogram,
    changes_applied: Counter,
    conflicts: Family<ConflictLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    nodes: Family<NodeLabels, Gauge>,
    pending_total: Gauge,
    pending_max: Gauge,
    pool: Family<PoolLabels, Gauge>,
    pool_size: Gauge,
    writers_waiting: Gauge,
    hub_failures: Counter,
    /// Event streams (Server-Sent Events) open now: `starsync_event_streams_open`, read at
    /// scrape time from the live hub's own count (which its stream tickets keep exact, a
    /// dropped connection included), so there is one count, not two kept in step.
    event_streams_open: Gauge,
    /// The last node and pending figures and when they were computed ([`HUB_GAUGES_TTL`]).
    hub_cache: Mutex<Option<(Instant, HubGauges)>>,
    /// Held by the one scrape computing the figures.
    hub_computing: Mutex<()>,
}

impl Metrics {
    /// A registry with every metric, `backend` (`sqlite` or `postgres`) in the build info.
    pub fn new(backend: &'static str) -> Metrics {
        let mut registry = Registry::with_prefix("starsync");
        let exchanges = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "exchanges",
            "Exchanges (POST /api/sync/exchange) by outcome: applied, duplicate, or the error code \
             of a refused one",
            exchanges.clone(),
        );
        // 1 ms to ~33 s: an exchange takes milliseconds, a large one waits for the writer lock
        // and the memory budget for seconds.
        let exchange_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "exchange_duration",
            "Time to handle an exchange that was answered (applied or duplicate), from the \
             request to the answer's start",
            Unit::Seconds,
            exchange_seconds.clone(),
        );
        let changes_applied = Counter::default();
        registry.register(
            "changes_applied",
            "Node changes applied (conflicts included, rejected ones not)",
            changes_applied.clone(),
        );
        let conflicts = Family::<ConflictLabels, Counter>::default();
        registry.register(
            "conflicts",
            "Conflicts met by node changes, by strategy and winner (PROTOCOL §5)",
            conflicts.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "changes_rejected",
            "Node changes rejected one by one inside an accepted packet, by reason code",
            rejected.clone(),
        );
        let nodes = Family::<NodeLabels, Gauge>::default();
        registry.register("nodes", "Registered nodes by state", nodes.clone());
        let pending_total = Gauge::default();
        registry.register(
            "pending_changes",
            "Changes waiting for delivery, summed over every node (computed at most every 5 s)",
            pending_total.clone(),
        );
        let pending_max = Gauge::default();
        registry.register(
            "pending_changes_max_per_node",
            "The longest queue of one node (computed at most every 5 s)",
            pending_max.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections of this process in use and idle (the writer's connection \
             is held in use)",
            pool.clone(),
        );
        let pool_size = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Size of this process's database pool (database.pool_size)",
            pool_size.clone(),
        );
        let writers_waiting = Gauge::default();
        registry.register(
            "writers_waiting",
            "Write transactions of this process waiting for its writer (other processes on the \
             same database queue on the database's lock and are not counted here)",
            writers_waiting.clone(),
        );
        let hub_failures = Counter::default();
        registry.register(
            "hub_gauge_failures",
            "Scrapes that could not read the node and pending figures from the database (the \
             previous figures were served)",
            hub_failures.clone(),
        );
        let event_streams_open = Gauge::default();
        registry.register(
            "event_streams_open",
            "Event streams (Server-Sent Events) open now",
            event_streams_open.clone(),
        );
        registry.register(
            "build",
            "The starsync version and database backend of this process",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                backend,
            }),
        );
        // Series that exist from the start, so `rate()` sees the first exchange.
        for outcome in [Outcome::Applied, Outcome::Duplicate] {
            drop(exchanges.get_or_create(&OutcomeLabels { outcome }));
        }
        for state in [NodeState::Active, NodeState::Disabled] {
            drop(nodes.get_or_create(&NodeLabels { state }));
        }
        Metrics {
            registry,
            exchanges,
            exchange_seconds,
            changes_applied,
            conflicts,
            rejected,
            nodes,
            pending_total,
            pending_max,
            pool,
            pool_size,
            writers_waiting,
            hub_failures,
            event_streams_open,
            hub_cache: Mutex::new(None),
            hub_computing: Mutex::new(()),
        }
    }

    /// Records one exchange: `report` is the engine's report when the exchange was answered,
    /// `Err(code)` the error it was refused with; `elapsed` is its handling time.
    pub fn record_exchange(&self, result: Result<&ReceiveReport, ErrorCode>, elapsed: Duration) {
        let report = match result {
            Ok(report) => report,
            Err(code) => {
                self.count_outcome(Outcome::Error(code));
                return;
            }
        };
        self.exchange_seconds.observe(elapsed.as_secs_f64());
        if report.duplicate {
            // Its changes, conflicts and rejections were counted when it was applied.
            self.count_outcome(Outcome::Duplicate);
            return;
        }
        self.count_outcome(Outcome::Applied);
        self.changes_applied.inc_by(report.processed_count);
        self.count_conflicts(&report.conflicts, report.conflict_count);
        self.count_rejections(&report.errors, report.error_count);
    }

    fn count_outcome(&self, outcome: Outcome) {
        self.exchanges
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    fn count_conflicts(&self, listed: &[ConflictReport], total: u64) {
        for c in listed {
            let r = c.conflict_resolution;
            self.conflicts
                .get_or_create(&ConflictLabels {
                    strategy: Listed::Is(r.strategy),
                    winner: Listed::Is(r.winner),
                })
                .inc();
        }
        let rest = total.saturating_sub(listed.len() as u64);
        if rest > 0 {
            self.conflicts
                .get_or_create(&ConflictLabels {
                    strategy: Listed::Unlisted,
                    winner: Listed::Unlisted,
                })
                .inc_by(rest);
        }
    }

    fn count_rejections(&self, listed: &[ChangeError], total: u64) {
        for e in listed {
            self.rejected
                .get_or_create(&RejectLabels {
                    reason: Listed::Is(e.reason),
                })
                .inc();
        }
        let rest = total.saturating_sub(listed.len() as u64);
        if rest > 0 {
            self.rejected
                .get_or_create(&RejectLabels {
                    reason: Listed::Unlisted,
                })
                .inc_by(rest);
        }
    }

    /// The metrics in the Prometheus text format, after reading the gauges that live in the
    /// database and the pool. Blocking (it may query the database): call it off the async
    /// workers.
    ///
    /// When the database cannot give the node and pending figures, the scrape still answers,
    /// with the previous figures and `starsync_hub_gauge_failures_total` counting it: the
    /// counters matter most exactly when the database is in trouble.
    pub fn render(&self, engine: &Engine) -> EngineResult<String> {
        match self.hub_gauges(engine) {
            Ok(Some(hub)) => {
                for (state, n) in [
                    (NodeState::Active, hub.nodes_active),
                    (NodeState::Disabled, hub.nodes_disabled),
                ] {
                    self.nodes.get_or_create(&NodeLabels { state }).set(n);
                }
                self.pending_total.set(hub.pending_total);
                self.pending_max.set(hub.pending_max);
            }
            Ok(None) => {}
            Err(e) => {
                self.hub_failures.inc();
                tracing::warn!(error = %e, "metrics: node and pending figures unavailable");
            }
        }
        self.event_streams_open
            .set(i64::try_from(engine.live.open_streams()).unwrap_or(i64::MAX));
        let pool = engine.pool_state();
        let idle = i64::from(pool.idle_connections);
        for (state, n) in [
            (ConnState::InUse, i64::from(pool.connections) - idle),
            (ConnState::Idle, idle),
        ] {
            self.pool.get_or_create(&PoolLabels { state }).set(n);
        }
        self.pool_size
            .set(i64::from(engine.settings().database.pool_size));
        self.writers_waiting
            .set(i64::try_from(engine.writers_waiting()).unwrap_or(i64::MAX));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .map_err(|e| std::io::Error::other(format!("encoding metrics: {e}")))?;
        Ok(out)
    }

    /// The node and pending figures, computed at most once per [`HUB_GAUGES_TTL`]; `None`
    /// when another scrape is computing them and there are earlier ones (left as they are).
    fn hub_gauges(&self, engine: &Engine) -> EngineResult<Option<HubGauges>> {
        let cached = *self.hub_cache.lock();
        let fresh = |c: Option<(Instant, HubGauges)>| {
            c.filter(|(at, _)| at.elapsed() < HUB_GAUGES_TTL)
                .map(|(_, g)| g)
        };
        if let Some(g) = fresh(cached) {
            return Ok(Some(g));
        }
        let _computing = match self.hub_computing.try_lock() {
            Some(guard) => guard,
            None if cached.is_some() => return Ok(None),
            // The first figures: wait for the scrape computing them.
            None => self.hub_computing.lock(),
        };
        // Computed meanwhile by the scrape we waited for?
        if let Some(g) = fresh(*self.hub_cache.lock()) {
            return Ok(Some(g));
        }
        let gauges = engine.hub_gauges()?;
        *self.hub_cache.lock() = Some((Instant::now(), gauges));
        Ok(Some(gauges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starsync_protocol::Resolution;

    fn scrape(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry).unwrap();
        out
    }

    #[test]
    fn a_scrape_answers_with_the_previous_figures_when_the_database_cannot_count() {
        use diesel::connection::SimpleConnection;
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("hub.db").display().to_string();
        let env = std::collections::HashMap::from([("DATABASE_URL".to_string(), url)]);
        let settings =
            crate::config::Settings::load_from(std::path::Path::new("/nonexistent"), &env).unwrap();
        let engine = Engine::open(std::sync::Arc::new(settings), &"a".repeat(40)).unwrap();
        engine
            .register(starsync_protocol::api::RegisterRequest {
                code: "M-1".into(),
                name: None,
                description: None,
                scopes: None,
                types: None,
            })
            .unwrap();
        let m = Metrics::new("sqlite");
        let text = m.render(&engine).unwrap();
        assert!(
            text.contains("starsync_nodes{state=\"active\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("starsync_hub_gauge_failures_total 0"),
            "{text}"
        );

        // The figures are due again, and the database can no longer count nodes.
        let old = Instant::now().checked_sub(2 * HUB_GAUGES_TTL).unwrap();
        m.hub_cache.lock().as_mut().unwrap().0 = old;
        engine
            .read(|c| Ok(c.batch_execute("ALTER TABLE sync_nodes RENAME TO gone")?))
            .unwrap();
        let text = m.render(&engine).unwrap();
        assert!(
            text.contains("starsync_hub_gauge_failures_total 1"),
            "{text}"
        );
        assert!(
            text.contains("starsync_nodes{state=\"active\"} 1"),
            "{text}"
        );
        assert!(text.contains("starsync_exchanges_total{outcome=\"applied\"} 0"));
    }

    #[test]
    fn an_exchange_is_counted_once_and_duplicates_add_no_changes() {
        let m = Metrics::new("sqlite");
        let report = ReceiveReport {
            duplicate: false,
            processed_count: 3,
            errors: vec![ChangeError {
                change_id: "c".into(),
                entity_type: "Task".into(),
                entity_uuid: "u".into(),
                error: ErrorCode::InvalidChange,
                reason: RejectReason::ImmutableType,
                message: String::new(),
            }],
            conflicts: vec![ConflictReport {
                conflict_id: "1".into(),
                entity_type: "Task".into(),
                entity_uuid: "u".into(),
                resolution: Strategy::ServerWins,
                server_version: 2,
                conflict_resolution: Resolution::new(Strategy::ServerWins, Winner::Server),
                change_id: "c".into(),
            }],
            // One more rejection than listed: counted as `unlisted`.
            error_count: 2,
            conflict_count: 1,
        };
        m.record_exchange(Ok(&report), Duration::from_millis(3));
        let dup = ReceiveReport {
            duplicate: true,
            ..report.clone()
        };
        m.record_exchange(Ok(&dup), Duration::from_millis(1));
        m.record_exchange(Err(ErrorCode::PacketGap), Duration::from_millis(1));
        let text = scrape(&m);
        for line in [
            "starsync_exchanges_total{outcome=\"applied\"} 1",
            "starsync_exchanges_total{outcome=\"duplicate\"} 1",
            "starsync_exchanges_total{outcome=\"packet_gap\"} 1",
            "starsync_changes_applied_total 3",
            "starsync_conflicts_total{strategy=\"server_wins\",winner=\"server\"} 1",
            "starsync_changes_rejected_total{reason=\"immutable_type\"} 1",
            "starsync_changes_rejected_total{reason=\"unlisted\"} 1",
            "starsync_exchange_duration_seconds_count 2",
            "starsync_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
