//! Persistence: the diesel schema, row models, the connection pool and every query.
//!
//! The backend is chosen explicitly from the database URL's scheme ([`DbUrl::parse`]). All
//! queries here are synchronous: callers on async workers wrap them in `web::block`.

pub mod entities;
pub mod history;
pub mod models;
pub mod nodes;
pub mod queue;
pub mod schema;

use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// Migrations for SQLite; `migrations/postgres/` holds the same steps under the same names.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

pub type Conn = SqliteConnection;
pub type Pool = r2d2::Pool<ConnectionManager<Conn>>;
pub type PooledConn = r2d2::PooledConnection<ConnectionManager<Conn>>;

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
}

pub type StoreResult<T> = Result<T, StoreError>;

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

/// PRAGMAs applied to every pooled SQLite connection (they are per connection, not per file).
#[derive(Debug)]
struct SqlitePragmas {
    wal_autocheckpoint: u32,
}

impl CustomizeConnection<Conn, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut Conn) -> Result<(), diesel::r2d2::Error> {
        // WAL: readers never block the writer. synchronous=NORMAL: durable at checkpoints,
        // no fsync per commit (the disk's fsync is slow). busy_timeout: other processes.
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = 15000;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = {};
             PRAGMA cache_size = -16000;",
            self.wal_autocheckpoint
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Opens the pool for `url`, creating the SQLite file and its folder when missing, and runs
/// pending migrations.
pub fn connect(url: &str, pool_size: u32, wal_autocheckpoint: u32) -> StoreResult<Pool> {
    match DbUrl::parse(url)? {
        DbUrl::Postgres(_) => Err(StoreError::Url(
            "this build of starsync has no PostgreSQL backend; use a SQLite URL".into(),
        )),
        DbUrl::Sqlite(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            let url = path.display().to_string();
            // WAL is a property of the file: switch it once, before several pooled
            // connections race to do it on a new database.
            {
                let mut first = Conn::establish(&url).map_err(|e| {
                    StoreError::Url(format!("cannot open SQLite database {url}: {e}"))
                })?;
                first.batch_execute("PRAGMA busy_timeout = 15000; PRAGMA journal_mode = WAL;")?;
            }
            let manager = ConnectionManager::<Conn>::new(url);
            let pool = r2d2::Pool::builder()
                .max_size(pool_size)
                .connection_timeout(Duration::from_secs(30))
                .connection_customizer(Box::new(SqlitePragmas { wal_autocheckpoint }))
                .build(manager)?;
            let mut conn = pool.get()?;
            run_migrations(&mut conn)?;
            Ok(pool)
        }
    }
}

/// Runs pending migrations. On SQLite the harness's own transaction serializes several
/// processes starting at once.
pub fn run_migrations(conn: &mut Conn) -> StoreResult<usize> {
    let done = conn
        .run_pending_migrations(SQLITE_MIGRATIONS)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(done.len())
}

/// A write transaction: on SQLite `BEGIN IMMEDIATE`, so the write lock is taken up front and
/// two exchanges can never interleave (one node's packets are applied strictly one at a time).
pub fn write_tx<T, E, F>(conn: &mut Conn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut Conn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    conn.immediate_transaction(f)
}

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
        created_at: crate::protocol::now_ts(),
    };
    diesel::insert_into(s::server_state)
        .values(&row)
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(s::server_state.find(1).first(conn)?)
}

/// Allocates `n` consecutive global sequence numbers and returns the first. Must run inside a
/// write transaction.
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
    }
}
