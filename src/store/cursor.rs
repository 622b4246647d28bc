//! Queries of the time cursors (PROTOCOL §11 "cursor") and of the change log read in commit
//! order across types (the change feed, §11.3, and delta sync's `server_changes`, §11.2). The
//! rules that use them live in `engine::cursor`.

use diesel::dsl::min;
use diesel::prelude::*;

use super::models::{Entity, ScopeExit};
use super::schema::entities::dsl as e;
use super::schema::scope_exits::dsl as x;
use super::schema::time_cursors::dsl as t;
use super::{Conn, StoreResult};

/// The sequence number a handed-out time stands for (None: never handed out).
pub fn seq_of(conn: &mut Conn, at: &str) -> StoreResult<Option<i64>> {
    Ok(t::time_cursors
        .find(at)
        .select(t::seq)
        .first(conn)
        .optional()?)
}

/// The time handed out for this sequence number, if any.
pub fn time_of(conn: &mut Conn, seq: i64) -> StoreResult<Option<String>> {
    Ok(t::time_cursors
        .filter(t::seq.eq(seq))
        .select(t::at)
        .first(conn)
        .optional()?)
}

/// The handed-out times around a point of the log.
#[derive(Debug, Default)]
pub struct Neighbours {
    /// The time and point just below.
    pub below: Option<(String, i64)>,
    /// The time just above.
    pub above: Option<String>,
}

/// The handed-out times just below and just above `seq` (by the unique index on `seq`; times
/// grow with sequence numbers, so these are also the neighbouring times).
pub fn neighbours(conn: &mut Conn, seq: i64) -> StoreResult<Neighbours> {
    let below = t::time_cursors
        .filter(t::seq.lt(seq))
        .order(t::seq.desc())
        .select((t::at, t::seq))
        .first(conn)
        .optional()?;
    let above = t::time_cursors
        .filter(t::seq.gt(seq))
        .order(t::seq.asc())
        .select(t::at)
        .first(conn)
        .optional()?;
    Ok(Neighbours { below, above })
}

pub fn insert(conn: &mut Conn, at: &str, seq: i64) -> StoreResult<()> {
    diesel::insert_into(t::time_cursors)
        .values((t::at.eq(at), t::seq.eq(seq)))
        .execute(conn)?;
    Ok(())
}

/// The lowest sequence number of the log stamped after `at` (an entity's latest change, by
/// the index on `applied_at`; or an exit from one of `scopes`, by the `(scope, seq)` key), if
/// any: "changes committed after an instant" start at it.
pub fn first_stamped_after(
    conn: &mut Conn,
    at: &str,
    scopes: Option<&[String]>,
) -> StoreResult<Option<i64>> {
    let entity: Option<i64> = e::entities
        .filter(e::applied_at.gt(at))
        .select(min(e::seq))
        .first(conn)?;
    let exit: Option<i64> = match scopes {
        Some(list) if !list.is_empty() => x::scope_exits
            .filter(x::scope.eq_any(list))
            .filter(x::created_at.gt(at))
            .select(min(x::seq))
            .first(conn)?,
        _ => None,
    };
    Ok(match (entity, exit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// What a page of the log is read through: the types (None: every type) and scopes (None:
/// every scope) it may hold.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub types: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
}

/// Up to `limit` entities whose latest change has `after < seq <= upto`, in log order, of the
/// filter's types and scopes; `live_only` leaves tombstones out. The scope filter is written in
/// SQL, so another tenant's rows are never read.
pub fn log_page(
    conn: &mut Conn,
    filter: &LogFilter,
    after: i64,
    upto: i64,
    live_only: bool,
    limit: i64,
) -> StoreResult<Vec<Entity>> {
    let mut q = e::entities
        .filter(e::seq.gt(after).and(e::seq.le(upto)))
        .order(e::seq.asc())
        .limit(limit)
        .into_boxed();
    if live_only {
        q = q.filter(e::is_deleted.eq(false));
    }
    if let Some(types) = &filter.types {
        q = q.filter(e::entity_type.eq_any(types.clone()));
    }
    if let Some(scopes) = &filter.scopes {
        q = q.filter(e::scope.eq_any(scopes.clone()));
    }
    Ok(q.load(conn)?)
}

/// Up to `limit` exits of the given scopes with `after < seq <= upto`, in log order.
pub fn exits_page(
    conn: &mut Conn,
    scopes: &[String],
    after: i64,
    upto: i64,
    limit: i64,
) -> StoreResult<Vec<ScopeExit>> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(x::scope_exits
        .filter(x::scope.eq_any(scopes))
        .filter(x::seq.gt(after).and(x::seq.le(upto)))
        .order(x::seq.asc())
        .limit(limit)
        .load(conn)?)
}

/// Whether the entity left one of `scopes` again with `after < seq <= upto` (by the index
/// `scope_exits_entity`): its deletion is told at that later exit, once.
pub fn exits_again(
    conn: &mut Conn,
    entity_type: &str,
    entity_uuid: &str,
    scopes: &[String],
    after: i64,
    upto: i64,
) -> StoreResult<bool> {
    let n: i64 = x::scope_exits
        .filter(x::entity_type.eq(entity_type))
        .filter(x::entity_uuid.eq(entity_uuid))
        .filter(x::seq.gt(after).and(x::seq.le(upto)))
        .filter(x::scope.eq_any(scopes))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Notes delta sync's `device_id` as the node's last device (PROTOCOL §11.2).
pub fn note_device(conn: &mut Conn, node_id: &str, device: &str) -> StoreResult<()> {
    use super::schema::sync_nodes::dsl as n;
    diesel::update(n::sync_nodes.find(node_id))
        .set(n::last_device.eq(device))
        .execute(conn)?;
    Ok(())
}
