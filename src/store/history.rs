//! Queries on `object_version_history`.

use diesel::prelude::*;

use super::models::HistoryRow;
use super::schema::object_version_history::dsl as h;
use super::{Conn, StoreResult};

pub fn insert(conn: &mut Conn, row: &HistoryRow) -> StoreResult<()> {
    diesel::insert_into(h::object_version_history)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn get(conn: &mut Conn, id: &str) -> StoreResult<Option<HistoryRow>> {
    Ok(h::object_version_history.find(id).first(conn).optional()?)
}

/// Filters of the conflict list.
#[derive(Debug, Default, Clone)]
pub struct HistoryFilter {
    pub entity_type: Option<String>,
    pub entity_uuid: Option<String>,
    pub node_id: Option<String>,
    pub unresolved_only: bool,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// Newest first.
pub fn list(conn: &mut Conn, f: &HistoryFilter) -> StoreResult<Vec<HistoryRow>> {
    let mut query = h::object_version_history.into_boxed();
    if let Some(t) = &f.entity_type {
        query = query.filter(h::entity_type.eq(t.clone()));
    }
    if let Some(u) = &f.entity_uuid {
        query = query.filter(h::entity_uuid.eq(u.clone()));
    }
    if let Some(n) = &f.node_id {
        query = query.filter(h::node_id.eq(n.clone()));
    }
    if f.unresolved_only {
        query = query.filter(h::resolved_at.is_null());
    }
    if let Some(b) = f.before_seq {
        query = query.filter(h::seq.lt(b));
    }
    Ok(query.order(h::seq.desc()).limit(f.limit).load(conn)?)
}

pub fn count_unresolved(conn: &mut Conn, node_id: Option<&str>) -> StoreResult<i64> {
    let mut query = h::object_version_history
        .filter(h::resolved_at.is_null())
        .into_boxed();
    if let Some(n) = node_id {
        query = query.filter(h::node_id.eq(n.to_string()));
    }
    Ok(query.count().get_result(conn)?)
}

/// Marks a row resolved by the admin. Returns false when it was already resolved (so two
/// admins resolving at once cannot both win).
pub fn mark_resolved(conn: &mut Conn, id: &str, resolution: &str, at: &str) -> StoreResult<bool> {
    let n = diesel::update(
        h::object_version_history.filter(h::id.eq(id).and(h::resolved_at.is_null())),
    )
    .set((
        h::resolved_at.eq(at),
        h::resolved_by.eq("admin"),
        h::conflict_resolution.eq(resolution),
    ))
    .execute(conn)?;
    Ok(n == 1)
}
