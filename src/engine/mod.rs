//! The rules of PROTOCOL.md: registration, packet delivery, per-node queues and conflicts.
//!
//! The engine is synchronous and owns no HTTP knowledge: the API layer calls it from
//! `web::block`, the CLI calls it directly (offline import/export). One [`Engine`] per process.

pub mod admin;
pub mod apply;
pub mod auth;
pub mod changes;
pub mod cursor;
pub mod delta;
pub mod exchange;
pub mod fields;
pub mod live;
pub mod node_write;
pub mod outbound;
pub mod rest;
pub mod scopes;
pub mod simple_push;
pub mod status;
pub mod watermelon;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::Settings;
use crate::store::{self, Pool, StoreError};

pub use auth::Caller;
pub use exchange::{ExchangeOutcome, ReceiveReport};
pub use status::HubGauges;

/// Engine errors. The API maps each variant to one status code and error code, in one place
/// (`api::error`).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidPacket(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "packet {got} is ahead of the next expected packet {expected}; resend from {expected}"
    )]
    PacketGap { expected: u64, got: u64 },
    #[error("{0}")]
    SchemaMismatch(String),
    #[error("{0}")]
    PacketTooLarge(String),
    #[error("{0}")]
    InvalidAck(String),
    /// An admin write whose entity is over `server.max_entity_bytes` (413).
    #[error("{0}")]
    EntityTooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    CodeTaken(String),
    #[error("{0}")]
    AlreadyResolved(String),
    /// A write based on a state the hub has changed since (409 `conflict`), refused whole.
    #[error("{0}")]
    Conflict(String),
    /// A node's REST entity write lost a conflict (409 `conflict`, PROTOCOL §11.3); its
    /// transaction committed (the history row exists). The answer carries the server's entity
    /// and the history row's id (None when the write was refused before any history row: an
    /// `If-Match` ahead of the server).
    #[error("{message}")]
    LostConflict {
        message: String,
        entity: Box<starsync_protocol::api::EntityView>,
        conflict_id: Option<String>,
    },
    /// A request carries more changes than the server takes at once (413 `too_many_changes`).
    #[error("{0}")]
    TooManyChanges(String),
    /// The limit of open event streams is reached (503 `too_many_streams`).
    #[error("{0}")]
    TooManyStreams(String),
    /// Well-formed JSON whose fields are missing or malformed (422).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation that is part of a transaction failed (writing an export file); the
    /// transaction was rolled back. The message names the path.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<diesel::result::Error> for EngineError {
    fn from(e: diesel::result::Error) -> Self {
        EngineError::Store(StoreError::Db(e))
    }
}

impl From<r2d2::Error> for EngineError {
    fn from(e: r2d2::Error) -> Self {
        EngineError::Store(StoreError::Pool(e))
    }
}

impl From<starsync_protocol::CodecError> for EngineError {
    fn from(e: starsync_protocol::CodecError) -> Self {
        match e {
            starsync_protocol::CodecError::TooLarge { .. } => {
                EngineError::PacketTooLarge(e.to_string())
            }
            other => EngineError::InvalidPacket(other.to_string()),
        }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// Shared state of one server process.
pub struct Engine {
    pub(crate) pool: Pool,
    pub(crate) settings: Arc<Settings>,
    pub(crate) server_node_id: String,
    pub(crate) server_code: String,
    /// SHA-256 of the admin token; compared in constant time.
    pub(crate) admin_token_hash: [u8; 32],
    /// This process's one writer (group commit, `store::group`): concurrent writes share a
    /// transaction and its commit, each in its own savepoint. One writer: SQLite allows one
    /// anyway, and waiting on an in-process lock is far cheaper than SQLite's busy-retry
    /// sleeps. One connection: its page cache stays warm (with writes rotating over pooled
    /// connections, each found its cache stale after the others wrote).
    pub(crate) writer: store::group::GroupWriter,
    /// Write transactions of this process queued for or running in `writer` now
    /// (`starsync_writers_waiting` in /metrics): one atomic add and subtract per write.
    writers_waiting: AtomicUsize,
    /// When this process's last write transaction failed for want of a working database (a
    /// full disk, a read-only file, a lost connection): `/health` answers 503 until a write
    /// succeeds. `None` while writes work.
    write_failed_at: Mutex<Option<String>>,
    /// The health check's own connection (opened on first use, dropped after an error), so
    /// `/health` answers at once even while every pooled connection is busy: a hub under
    /// load is not a hub whose database is gone. `None` in `health_url` (an engine built on a
    /// pool alone): the check uses the pool.
    health: Mutex<Option<store::Conn>>,
    health_url: Option<String>,
    /// SQLite only: background WAL checkpoints (stops with the engine).
    _checkpointer: Option<store::Checkpointer>,
    /// The open event streams of this process, told after every commit (PROTOCOL §12).
    pub(crate) live: Arc<live::LiveHub>,
    /// PostgreSQL only: hears the other processes' commits (stops with the engine).
    _listener: Option<live::Listener>,
    /// PostgreSQL only: refreshes the planner's statistics while the log grows
    /// ([`store::stats`]); told the log position after every commit.
    stats: Option<store::stats::StatsRefresher>,
}

impl Engine {
    /// Opens the database (running migrations) and loads the hub identity.
    pub fn open(settings: Arc<Settings>, admin_token: &str) -> EngineResult<Engine> {
        let url = settings.database_url();
        let pool = store::connect(
            &url,
            settings.database.pool_size,
            settings.database.wal_autocheckpoint,
        )?;
        let mut engine = Self::with_pool(pool, settings, admin_token)?;
        engine.health_url = Some(url.clone());
        engine._checkpointer = store::Checkpointer::spawn(&url, Duration::from_millis(250))?;
        engine._listener = live::Listener::spawn(&url, engine.live.clone())?;
        engine.stats = store::stats::StatsRefresher::spawn(&url)?;
        Ok(engine)
    }

    pub fn with_pool(
        pool: Pool,
        settings: Arc<Settings>,
        admin_token: &str,
    ) -> EngineResult<Engine> {
        let ident = {
            let mut conn = pool.get()?;
            store::server_identity(&mut conn)?
        };
        let limits = store::group::GroupLimits {
            max_open: Duration::from_millis(settings.database.group_commit_max_ms),
            ..store::group::GroupLimits::default()
        };
        Ok(Engine {
            pool,
            // Half the pool: the other half stays free for exchanges and reads.
            live: live::LiveHub::new(
                settings.server.max_event_streams,
                (settings.database.pool_size as usize / 2).max(1),
            ),
            settings,
            server_node_id: ident.server_node_id,
            server_code: ident.code,
            admin_token_hash: auth::sha256(admin_token),
            writer: store::group::GroupWriter::new(limits),
            writers_waiting: AtomicUsize::new(0),
            write_failed_at: Mutex::new(None),
            health: Mutex::new(None),
            health_url: None,
            _checkpointer: None,
            _listener: None,
            stats: None,
        })
    }

    pub fn server_node_id(&self) -> &str {
        &self.server_node_id
    }

    pub fn server_code(&self) -> &str {
        &self.server_code
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// This process's event streams (PROTOCOL §12).
    pub fn live(&self) -> &Arc<live::LiveHub> {
        &self.live
    }

    /// Runs `f` in a write transaction, one writer at a time: as one member of a group commit
    /// (its own savepoint, after the writes queued before it), answered once that commit made
    /// it durable (docs/design.md, "Group commit").
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut store::Conn) -> EngineResult<T>,
    ) -> EngineResult<T> {
        self.write_noting(|c| Ok((f(c)?, Vec::new())))
    }

    /// [`Engine::write`] for transactions that also have something to tell dashboards
    /// ([`live::AdminEvent`]s, returned beside the result).
    ///
    /// Every write transaction ends here, so this is where the event streams hear of it: the
    /// transaction's summary (what it wrote, [`live::summarize`]) is taken inside it, sent to
    /// the other processes by `NOTIFY` inside it (PostgreSQL delivers it on commit), and
    /// published to this process's streams only after the commit returned, so no stream
    /// announces data another connection cannot read yet.
    pub(crate) fn write_noting<T>(
        &self,
        f: impl FnOnce(&mut store::Conn) -> EngineResult<(T, Vec<live::AdminEvent>)>,
    ) -> EngineResult<T> {
        self.write_summarized(|c| {
            let before = store::last_seq(c)?;
            let (value, admin) = f(c)?;
            let last = store::last_seq(c)?;
            Ok((value, admin, before..=last))
        })
    }

    /// [`Engine::write_noting`] for transactions that take every sequence number they write
    /// from the [`apply::SeqAlloc`] handed to `f` (which must not call [`store::alloc_seq`]
    /// itself): the counter is read once, at the start, and written back once, at the end.
    ///
    /// Why: an exchange runs under the writer lock, where on PostgreSQL each statement is a
    /// round trip every other writer waits behind; reading the counter once instead of three
    /// times (transaction start, allocator, commit summary) is two of them fewer per exchange.
    pub(crate) fn write_sequenced<T>(
        &self,
        f: impl FnOnce(
            &mut store::Conn,
            &mut apply::SeqAlloc,
        ) -> EngineResult<(T, Vec<live::AdminEvent>)>,
    ) -> EngineResult<T> {
        self.write_summarized(|c| {
            let mut seq = apply::SeqAlloc::begin(c)?;
            let before = seq.last();
            let (value, admin) = f(c, &mut seq)?;
            let last = seq.finish(c)?;
            debug_assert_eq!(
                store::last_seq(c).ok(),
                Some(last),
                "a sequenced write allocated sequence numbers outside its SeqAlloc"
            );
            Ok((value, admin, before..=last))
        })
    }

    /// The common end of [`Engine::write_noting`] and [`Engine::write_sequenced`]: `f` also
    /// returns the sequence range `before..=last` of the transaction (`before` the counter at
    /// its start), from which its summary is read.
    fn write_summarized<T>(
        &self,
        f: impl FnOnce(
            &mut store::Conn,
        )
            -> EngineResult<(T, Vec<live::AdminEvent>, std::ops::RangeInclusive<i64>)>,
    ) -> EngineResult<T> {
        let result = self.write_tx(|c| {
            let (value, admin, range) = f(c)?;
            let summary = live::summarize(
                c,
                *range.start(),
                *range.end(),
                self.settings.scopes.is_some(),
            )?;
            let commit = (summary.is_some() || !admin.is_empty()).then(|| live::Commit {
                origin: self.live.origin().to_string(),
                summary,
                admin,
            });
            if let Some(commit) = &commit {
                live::notify_in_tx(c, commit)?;
            }
            Ok((value, commit))
        });
        let (value, commit) = result?;
        if let Some(commit) = commit {
            if let (Some(stats), Some(summary)) = (&self.stats, &commit.summary) {
                stats.note(summary.last_seq);
            }
            self.live.publish(&commit);
        }
        Ok(value)
    }

    /// One write transaction through the group-commit writer; `f` runs in its own savepoint
    /// and this returns once the commit that made it durable is done.
    fn write_tx<T>(&self, f: impl FnOnce(&mut store::Conn) -> EngineResult<T>) -> EngineResult<T> {
        self.writers_waiting.fetch_add(1, Ordering::Relaxed);
        let result = self.writer.write(&self.pool, f);
        self.writers_waiting.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(v) => {
                *self.write_failed_at.lock() = None;
                Ok(v)
            }
            Err(e @ EngineError::Store(_)) => Err(self.write_failed(e)),
            Err(e) => Err(e),
        }
    }

    /// Notes a failed write transaction for `/health` (unless the database refused particular
    /// values, which says nothing about whether writes work).
    fn write_failed(&self, e: EngineError) -> EngineError {
        if let EngineError::Store(s) = &e {
            if s.is_unavailability() {
                tracing::error!(error = %s, "a database write failed; /health reports 503 until one succeeds");
                *self.write_failed_at.lock() = Some(starsync_protocol::now_ts());
            }
        }
        e
    }

    /// When the last write transaction failed, if writes have not worked since.
    pub fn write_failed_at(&self) -> Option<String> {
        self.write_failed_at.lock().clone()
    }

    /// An empty write transaction (it takes and writes the writer lock row, then commits): the
    /// cheapest proof that writes work again.
    pub fn probe_write(&self) -> EngineResult<()> {
        self.write(|_| Ok(()))
    }

    /// One trivial query: can this process reach its database? On the health check's own
    /// connection (the `health` field), the pool's when there is none.
    pub fn check_database(&self) -> EngineResult<()> {
        use diesel::connection::SimpleConnection;
        let Some(url) = &self.health_url else {
            return self.read(|c| Ok(c.batch_execute("SELECT 1")?));
        };
        let mut slot = self.health.lock();
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(store::connect_one(
                url,
                self.settings.database.wal_autocheckpoint,
            )?),
        };
        if let Err(e) = conn.batch_execute("SELECT 1") {
            // Broken (the database restarted?): a fresh connection next time.
            *slot = None;
            return Err(e.into());
        }
        Ok(())
    }

    /// Write transactions of this process waiting for their turn now.
    pub fn writers_waiting(&self) -> usize {
        self.writers_waiting.load(Ordering::Relaxed)
    }

    /// Connections of the pool: open, and idle among them (the writer's is never idle).
    pub fn pool_state(&self) -> r2d2::State {
        self.pool.state()
    }

    /// Runs `f` on a pooled connection (reads).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut store::Conn) -> EngineResult<T>,
    ) -> EngineResult<T> {
        let mut conn = self.pool.get()?;
        f(&mut conn)
    }
}
