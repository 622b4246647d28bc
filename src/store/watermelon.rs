//! Queries of the WatermelonDB protocol (PROTOCOL §11.1): the pull cursors, the entities a
//! push created (and for which cursor), the snapshot a pull reads, and a table's change-log
//! pages. The rules that use them live in `engine::watermelon`.

use std::collections::{HashMap, HashSet};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::models::Entity;
use super::schema::entities::dsl as e;
use super::schema::{watermelon_created as wc, watermelon_pulls as wp};
use super::{Conn, PooledConn, StoreResult};

/// Records a pull's cursor: `mark` (a fresh sequence number) stands for the log up to and
/// including `snapshot_seq`.
pub fn insert_pull(
    conn: &mut Conn,
    mark: i64,
    node_id: &str,
    snapshot_seq: i64,
    now: &str,
) -> StoreResult<()> {
    diesel::insert_into(wp::table)
        .values((
            wp::mark.eq(mark),
            wp::node_id.eq(node_id),
            wp::snapshot_seq.eq(snapshot_seq),
            wp::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// The last sequence number the pull that handed out `mark` saw (None: never handed out).
pub fn pull_snapshot(conn: &mut Conn, mark: i64) -> StoreResult<Option<i64>> {
    Ok(wp::table
        .find(mark)
        .select(wp::snapshot_seq)
        .first(conn)
        .optional()?)
}

/// Notes that a push carrying `mark` created these entities (of one type): the client that
/// pushed them holds them. An entity already noted keeps its first mark.
pub fn note_created(
    conn: &mut Conn,
    entity_type: &str,
    uuids: &[&str],
    mark: i64,
) -> StoreResult<()> {
    for chunk in uuids.chunks(300) {
        let have: HashSet<String> = wc::table
            .filter(wc::entity_type.eq(entity_type))
            .filter(wc::entity_uuid.eq_any(chunk))
            .select(wc::entity_uuid)
            .load::<String>(conn)?
            .into_iter()
            .collect();
        let rows: Vec<_> = chunk
            .iter()
            .filter(|u| !have.contains(**u))
            .map(|u| {
                (
                    wc::entity_type.eq(entity_type),
                    wc::entity_uuid.eq(*u),
                    wc::pull_mark.eq(mark),
                )
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        match conn {
            super::DbConn::Sqlite(c) => diesel::insert_into(wc::table).values(&rows).execute(c)?,
            #[cfg(feature = "postgres")]
            super::DbConn::Postgres(c) => {
                diesel::insert_into(wc::table).values(&rows).execute(c)?
            }
        };
    }
    Ok(())
}

/// Which of `uuids` (of one type) a push carrying `mark` created.
pub fn created_by(
    conn: &mut Conn,
    entity_type: &str,
    uuids: &[&str],
    mark: i64,
) -> StoreResult<HashSet<String>> {
    if uuids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(wc::table
        .filter(wc::entity_type.eq(entity_type))
        .filter(wc::entity_uuid.eq_any(uuids))
        .filter(wc::pull_mark.eq(mark))
        .select(wc::entity_uuid)
        .load::<String>(conn)?
        .into_iter()
        .collect())
}

/// Up to `limit` entities of one type whose latest change is after `after_seq`, in log order
/// (index `entities_type_seq`). `live_only` leaves tombstones out.
pub fn type_page(
    conn: &mut Conn,
    entity_type: &str,
    after_seq: i64,
    live_only: bool,
    limit: i64,
) -> StoreResult<Vec<Entity>> {
    let mut q = e::entities
        .filter(e::entity_type.eq(entity_type))
        .filter(e::seq.gt(after_seq))
        .order(e::seq.asc())
        .limit(limit)
        .into_boxed();
    if live_only {
        q = q.filter(e::is_deleted.eq(false));
    }
    Ok(q.load(conn)?)
}

/// A read-only transaction on a pooled connection, kept open across calls: every read through
/// it sees the database as it was at its first read. Rolled back when dropped, so the
/// connection goes back to the pool outside any transaction.
///
/// Why: a pull streams its answer page by page; without one snapshot, an entity changing
/// while the answer is written would move past the pages still to come and be left out, and
/// the next pull would send it as `updated` to a client that never had it.
pub struct Snapshot {
    conn: Option<PooledConn>,
}

impl Snapshot {
    pub fn begin(mut conn: PooledConn) -> StoreResult<Snapshot> {
        match &mut *conn {
            // SQLite in WAL mode: a deferred transaction reads one snapshot from its first read.
            super::DbConn::Sqlite(c) => c.batch_execute("BEGIN DEFERRED")?,
            // PostgreSQL: REPEATABLE READ takes its snapshot at the first query.
            #[cfg(feature = "postgres")]
            super::DbConn::Postgres(c) => {
                c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?
            }
        }
        Ok(Snapshot { conn: Some(conn) })
    }

    pub fn conn(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a snapshot holds its connection until dropped")
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            if let Err(err) = c.batch_execute("ROLLBACK") {
                tracing::warn!(error = %err, "could not end a pull's read transaction");
            }
        }
    }
}

/// Notes a WatermelonDB pull (`last_sync_out`) or push (`last_sync_in`) in the node's status,
/// as an exchange does, without touching its packet counters (a packet exchange of the same
/// node may be under way with its own copy of them).
pub fn note_sync(conn: &mut Conn, node_id: &str, pushed: bool, now: &str) -> StoreResult<()> {
    use super::schema::sync_nodes::dsl as n;
    let target = n::sync_nodes.find(node_id);
    if pushed {
        diesel::update(target)
            .set(n::last_sync_in.eq(now))
            .execute(conn)?;
    } else {
        diesel::update(target)
            .set(n::last_sync_out.eq(now))
            .execute(conn)?;
    }
    Ok(())
}

/// For each of `uuids` (of one type) that left a scope after `after_seq`: the scope it left
/// first, i.e. the scope it was in at `after_seq` (index `scope_exits_entity`, by entity).
pub fn scopes_at(
    conn: &mut Conn,
    entity_type: &str,
    uuids: &[&str],
    after_seq: i64,
) -> StoreResult<HashMap<String, String>> {
    use super::schema::scope_exits::dsl as x;
    let mut out = HashMap::new();
    if uuids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<(String, String)> = x::scope_exits
        .filter(x::entity_type.eq(entity_type))
        .filter(x::entity_uuid.eq_any(uuids))
        .filter(x::seq.gt(after_seq))
        .order(x::seq.asc())
        .select((x::entity_uuid, x::scope))
        .load(conn)?;
    for (uuid, scope) in rows {
        out.entry(uuid).or_insert(scope);
    }
    Ok(out)
}

/// Up to `limit` live entities of one type with `after_seq < seq <= upto`, in log order, of one
/// scope (by the `(scope, seq)` index) or, with `None`, of every scope: a scope the node gained
/// after the client's last pull, whose older entities the client cannot hold.
pub fn gained_page(
    conn: &mut Conn,
    entity_type: &str,
    scope: Option<&str>,
    after_seq: i64,
    upto: i64,
    limit: i64,
) -> StoreResult<Vec<Entity>> {
    let q = e::entities
        .filter(e::entity_type.eq(entity_type))
        .filter(e::is_deleted.eq(false))
        .filter(e::seq.gt(after_seq).and(e::seq.le(upto)))
        .limit(limit)
        .into_boxed();
    let q = match scope {
        Some(s) => q
            .filter(e::scope.eq(s.to_string()))
            .order((e::scope.asc(), e::seq.asc())),
        None => q.order(e::seq.asc()),
    };
    Ok(q.load(conn)?)
}

/// Up to `limit` entities of one type, of one lost scope (or, with `None`, of the whole log),
/// live or deleted after the client's last pull (`upto`), with `seq > after_seq`, in log order.
/// Which of them the client may hold is the caller's rule.
pub fn lost_page(
    conn: &mut Conn,
    entity_type: &str,
    scope: Option<&str>,
    upto: i64,
    after_seq: i64,
    limit: i64,
) -> StoreResult<Vec<Entity>> {
    let q = e::entities
        .filter(e::entity_type.eq(entity_type))
        .filter(e::is_deleted.eq(false).or(e::seq.gt(upto)))
        .filter(e::seq.gt(after_seq))
        .limit(limit)
        .into_boxed();
    let q = match scope {
        Some(s) => q
            .filter(e::scope.eq(s.to_string()))
            .order((e::scope.asc(), e::seq.asc())),
        None => q.order(e::seq.asc()),
    };
    Ok(q.load(conn)?)
}
