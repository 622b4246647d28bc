//! Persistence: the diesel schema, row models, the connection pool and every query.
//!
//! The backend is chosen explicitly from the database URL's scheme ([`DbUrl::parse`]). All
//! queries here are synchronous: callers on async workers wrap them in `web::block`.

pub mod cursor;
pub mod entities;
pub mod group;
pub mod history;
pub mod models;
pub mod nodes;
pub mod pending;
pub mod push;
pub mod queue;
pub mod schema;
pub mod scopes;
pub mod stats;
pub mod watermelon;

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// Migrations per backend: the same steps under the same names.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "postgres")]
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to either backend. Queries are written once against this type; the backend
/// is picked explicitly from the URL scheme by [`Manager`], never by trial and error.
#[cfg(feature = "postgres")]
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(diesel::SqliteConnection),
    Postgres(diesel::PgConnection),
}

/// A SQLite-only build (`--no-default-features`): the same type with one backend, so every
/// query compiles unchanged and no libpq is linked.
#[cfg(not(feature = "postgres"))]
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(diesel::SqliteConnection),
}

pub type Conn = DbConn;
pub type Pool = r2d2::Pool<Manager>;
pub type PooledConn = r2d2::PooledConnection<Manager>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Url(String),
    #[error("cannot create database directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The write transaction this write shared with concurrent ones (group commit,
    /// [`group`]) could not commit, or could not go on: it was rolled back, so nothing of this
    /// write was applied. Never retried change by change: the failure is the batch's, not
    /// this write's values.
    #[error("the write could not be committed (rolled back, nothing applied): {0}")]
    Commit(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// The database refused a statement while the connection itself kept working: possibly
    /// because of the values written (a data or constraint error), so applying a packet's
    /// changes one by one can single the culprit out. A lost connection, a failed
    /// serialization or a read-only transaction says nothing about the values.
    pub fn is_statement_refusal(&self) -> bool {
        use diesel::result::DatabaseErrorKind as K;
        match self {
            StoreError::Db(diesel::result::Error::DatabaseError(kind, _)) => !matches!(
                kind,
                K::ClosedConnection
                    | K::UnableToSendCommand
                    | K::SerializationFailure
                    | K::ReadOnlyTransaction
            ),
            _ => false,
        }
    }

    /// The database could not be reached or could not write (a full disk, a read-only file,
    /// a lost connection), as opposed to refusing particular values: `/health` reports it.
    pub fn is_unavailability(&self) -> bool {
        use diesel::result::DatabaseErrorKind as K;
        use diesel::result::Error as E;
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(E::DatabaseError(kind, _)) => !matches!(
                kind,
                K::UniqueViolation
                    | K::ForeignKeyViolation
                    | K::NotNullViolation
                    | K::CheckViolation
                    | K::RestrictViolation
                    | K::ExclusionViolation
            ),
            StoreError::Db(E::RollbackErrorOnCommit { .. } | E::BrokenTransactionManager) => true,
            StoreError::Commit(_) => true,
            _ => false,
        }
    }
}

/// A database location, decided from the URL scheme and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbUrl {
    /// `sqlite://rel/path`, `sqlite:///abs/path`, a bare file path → SQLite;
    /// `postgres://` or `postgresql://` → PostgreSQL; any other scheme is an error.
    pub fn parse(url: &str) -> StoreResult<DbUrl> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::Url("database URL is empty".into()));
        }
        if let Some(rest) = url.strip_prefix("sqlite://") {
            return Ok(DbUrl::Sqlite(PathBuf::from(rest)));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            return Ok(DbUrl::Sqlite(PathBuf::from(rest)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_string()));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(StoreError::Url(format!(
                "unknown database URL scheme {scheme:?}: use sqlite://path, a file path, or postgres://…"
            )));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(url)))
    }
}

/// The URL with any password replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            if let Some((user, _password)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Opens connections of the backend the URL names, and applies per-connection settings.
#[derive(Debug, Clone)]
pub struct Manager {
    url: DbUrl,
    wal_autocheckpoint: u32,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConn, Self::Error> {
        match &self.url {
            DbUrl::Sqlite(path) => {
                let mut c = diesel::SqliteConnection::establish(&path.display().to_string())
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // PRAGMAs are per connection, not per file. busy_timeout first: the others
                // may need a lock. WAL: readers never block the writer. synchronous=NORMAL:
                // durable at checkpoints, no fsync per commit (the disk's fsync is slow).
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = 15000;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;
                     PRAGMA wal_autocheckpoint = {};
                     PRAGMA cache_size = -16000;",
                    self.wal_autocheckpoint
                ))
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConn::Sqlite(c))
            }
            #[cfg(feature = "postgres")]
            DbUrl::Postgres(url) => diesel::PgConnection::establish(url)
                .map(DbConn::Postgres)
                .map_err(diesel::r2d2::Error::ConnectionError),
            #[cfg(not(feature = "postgres"))]
            DbUrl::Postgres(_) => Err(diesel::r2d2::Error::ConnectionError(
                diesel::ConnectionError::BadConnection(NO_POSTGRES.into()),
            )),
        }
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut DbConn) -> bool {
        false
    }
}

/// One connection outside the pool, with the pool's per-connection settings (for work that
/// must not queue behind pooled requests, like the health check).
pub fn connect_one(url: &str, wal_autocheckpoint: u32) -> StoreResult<DbConn> {
    let manager = Manager {
        url: DbUrl::parse(url)?,
        wal_autocheckpoint,
    };
    r2d2::ManageConnection::connect(&manager).map_err(|e| StoreError::Url(e.to_string()))
}

/// What a SQLite-only build says when given a PostgreSQL URL.
#[cfg(not(feature = "postgres"))]
const NO_POSTGRES: &str = "this starsync was built without PostgreSQL support (cargo feature \
                           `postgres`): rebuild with default features, or use a SQLite DATABASE_URL";

/// Opens the pool for `url` (creating a SQLite file and its folder when missing) and runs
/// pending migrations.
pub fn connect(url: &str, pool_size: u32, wal_autocheckpoint: u32) -> StoreResult<Pool> {
    let url = DbUrl::parse(url)?;
    if let DbUrl::Sqlite(path) = &url {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // The database holds every node's data: private to its owner from the first byte.
        // SQLite creates the -wal and -shm files with the database file's permissions.
        create_private(path)?;
        // WAL is a property of the file: switch it once, before several pooled connections
        // race to do it on a new database.
        let text = path.display().to_string();
        let mut first = diesel::SqliteConnection::establish(&text)
            .map_err(|e| StoreError::Url(format!("cannot open SQLite database {text}: {e}")))?;
        first.batch_execute("PRAGMA busy_timeout = 15000; PRAGMA journal_mode = WAL;")?;
    }
    // One direct attempt first: an unreachable PostgreSQL is one clear line at once, not 30 s of
    // the pool retrying and logging the same error again and again.
    #[cfg(feature = "postgres")]
    if let DbUrl::Postgres(text) = &url {
        diesel::PgConnection::establish(text).map_err(|e| {
            StoreError::Url(format!(
                "cannot connect to PostgreSQL at {}: {} (check DATABASE_URL and that the server \
                 is running)",
                redact_url(text),
                // libpq's message spans lines; a log line is one line.
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
        })?;
    }
    let manager = Manager {
        url: url.clone(),
        wal_autocheckpoint,
    };
    let pool = r2d2::Pool::builder()
        .max_size(pool_size)
        .connection_timeout(Duration::from_secs(30))
        .build(manager)
        .map_err(|e| match &url {
            DbUrl::Postgres(_) => StoreError::Url(format!(
                "cannot connect to PostgreSQL: {e} (check DATABASE_URL and that the server is running)"
            )),
            DbUrl::Sqlite(_) => StoreError::Pool(e),
        })?;
    let mut conn = pool.get()?;
    run_migrations(&mut conn)?;
    Ok(pool)
}

/// Creates an empty file with mode 0600 when it does not exist yet (an existing database keeps
/// the permissions its owner chose).
fn create_private(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Checkpoints a SQLite WAL from a background thread, so commits never do it.
///
/// Why: with automatic checkpoints, the commit that crosses `wal_autocheckpoint` copies the
/// whole WAL into the database file before it returns — a 90 ms stall every ~15,000 changes in
/// the ingest benchmark. A PASSIVE checkpoint here runs beside the writer instead (it never
/// blocks it), and keeps the WAL short so automatic checkpoints (still configured, as a safety
/// net) rarely trigger. Stops when dropped.
pub struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for a SQLite URL; `None` for other backends.
    pub fn spawn(url: &str, every: Duration) -> StoreResult<Option<Checkpointer>> {
        let DbUrl::Sqlite(path) = DbUrl::parse(url)? else {
            return Ok(None);
        };
        let mut conn =
            diesel::SqliteConnection::establish(&path.display().to_string()).map_err(|e| {
                StoreError::Url(format!("checkpointer cannot open {}: {e}", path.display()))
            })?;
        conn.batch_execute("PRAGMA busy_timeout = 1000;")?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let tick = Duration::from_millis(25);
                let mut waited = Duration::ZERO;
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited >= every {
                        waited = Duration::ZERO;
                        // Busy or locked: try again next time; nothing depends on one run.
                        let _ = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);");
                    }
                }
            })
            .map_err(|e| StoreError::Url(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Some(Checkpointer {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Key of the PostgreSQL advisory lock that serializes migrations of several processes
/// starting at once ("SSYN" in ASCII).
#[cfg(feature = "postgres")]
const MIGRATION_LOCK_KEY: i64 = 0x5353_594E;

/// Runs pending migrations. PostgreSQL: under an advisory lock, so several processes may start
/// together. SQLite: the harness's transaction takes the file's write lock.
pub fn run_migrations(conn: &mut Conn) -> StoreResult<usize> {
    let mig = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    match conn {
        DbConn::Sqlite(c) => Ok(c
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map_err(mig)?
            .len()),
        #[cfg(feature = "postgres")]
        DbConn::Postgres(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
            let result = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))?;
            result.map_err(mig)
        }
    }
}

/// Log target of the writer lock's debug lines (`RUST_LOG=starsync::store::writer_lock=debug`).
pub const WRITER_LOCK_LOG: &str = "starsync::store::writer_lock";

/// The hub's identity, created on first start.
pub fn server_identity(conn: &mut Conn) -> StoreResult<models::ServerState> {
    use schema::server_state::dsl as s;
    if let Some(row) = s::server_state
        .find(1)
        .first::<models::ServerState>(conn)
        .optional()?
    {
        return Ok(row);
    }
    let row = models::ServerState {
        id: 1,
        server_node_id: uuid::Uuid::new_v4().to_string(),
        code: "server".into(),
        last_seq: 0,
        created_at: starsync_protocol::now_ts(),
    };
    // Two processes starting on a new database may both try; the loser reads the winner's row.
    let _ = diesel::insert_into(s::server_state)
        .values(&row)
        .execute(conn);
    Ok(s::server_state.find(1).first(conn)?)
}

/// Allocates `n` consecutive global sequence numbers and returns the first. Must run inside a
/// write transaction.
///
/// One statement (`RETURNING`), not an update and a read: it runs under the writer lock, where
/// on PostgreSQL every statement is a round trip that all other writers wait behind.
pub fn alloc_seq(conn: &mut Conn, n: i64) -> StoreResult<i64> {
    use schema::server_state::dsl as s;
    let last: i64 = diesel::update(s::server_state.find(1))
        .set(s::last_seq.eq(s::last_seq + n))
        .returning(s::last_seq)
        .get_result(conn)?;
    Ok(last - n + 1)
}

/// The highest sequence number handed out so far.
pub fn last_seq(conn: &mut Conn) -> StoreResult<i64> {
    use schema::server_state::dsl as s;
    Ok(s::server_state.find(1).select(s::last_seq).first(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_schemes() {
        assert_eq!(
            DbUrl::parse("sqlite://data/x.db").unwrap(),
            DbUrl::Sqlite("data/x.db".into())
        );
        assert_eq!(
            DbUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DbUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(DbUrl::parse("x.db").unwrap(), DbUrl::Sqlite("x.db".into()));
        assert!(matches!(
            DbUrl::parse("postgres://u@h/db").unwrap(),
            DbUrl::Postgres(_)
        ));
        assert!(DbUrl::parse("mysql://x").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("data/x.db"), "data/x.db");
    }

    /// The bundled SQLite is built as `.cargo/config.toml` asks: a build without it (the
    /// variable lost, another crate forcing its own flags) still works but re-plans every
    /// statement with a LIMIT on each run and serialises the pool on two global locks, which
    /// only a benchmark would notice. So the options are checked here.
    #[test]
    fn bundled_sqlite_has_the_workspace_build_options() {
        use diesel::connection::Connection;
        use diesel::sql_types::Text;
        #[derive(diesel::QueryableByName)]
        struct Opt {
            #[diesel(sql_type = Text)]
            compile_options: String,
        }
        let mut conn = diesel::sqlite::SqliteConnection::establish(":memory:").unwrap();
        let opts: Vec<String> = diesel::sql_query("PRAGMA compile_options")
            .load::<Opt>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|o| o.compile_options)
            .collect();
        assert!(opts.iter().any(|o| o == "ENABLE_QPSG"), "{opts:?}");
        assert!(opts.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{opts:?}");
        assert!(
            !opts.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{opts:?}"
        );
    }
}
