//! Queries on the scope tables (PROTOCOL §10): a node's scopes with their cursors
//! (`node_scopes`), the scopes it lost and still has to be sent DELETEs for
//! (`node_scope_losses`), and the record of entities leaving a scope (`scope_exits`).
//! Which of their rows are pending for a node is the pending rule, in [`super::pending`].

use diesel::prelude::*;

use super::models::{NodeScope, ScopeExit, ScopeLoss};
use super::schema::node_scope_losses::dsl as l;
use super::schema::node_scopes::dsl as ns;
use super::schema::scope_exits::dsl as x;
use super::schema::sync_nodes::dsl as n;
use super::{Conn, StoreResult};

/// The `entities.scope` (and `node_scopes.scope`) value of global types: the empty string,
/// which no scope value can be (they are 1–128 characters), so it never meets a tenant's.
pub const GLOBAL: &str = "";

/// The scope that means every scope.
pub const ALL: &str = "*";

pub fn of_node(conn: &mut Conn, node_id: &str) -> StoreResult<Vec<NodeScope>> {
    Ok(ns::node_scopes
        .filter(ns::node_id.eq(node_id))
        .order(ns::scope.asc())
        .load(conn)?)
}

/// Every node's scope rows (node listings), ordered by node then scope.
pub fn all(conn: &mut Conn) -> StoreResult<Vec<NodeScope>> {
    Ok(ns::node_scopes
        .order((ns::node_id.asc(), ns::scope.asc()))
        .load(conn)?)
}

pub fn insert(conn: &mut Conn, row: &NodeScope) -> StoreResult<()> {
    diesel::insert_into(ns::node_scopes)
        .values(row)
        .execute(conn)?;
    Ok(())
}

pub fn remove(conn: &mut Conn, node_id: &str, scope: &str) -> StoreResult<()> {
    diesel::delete(ns::node_scopes.find((node_id, scope))).execute(conn)?;
    Ok(())
}

/// Starts a scope's stream over (a types change): the node is sent the scope's live entities
/// again, as for a scope it just gained.
pub fn restart(
    conn: &mut Conn,
    node_id: &str,
    scope: &str,
    since_seq: i64,
    since_packet: i64,
) -> StoreResult<()> {
    diesel::update(ns::node_scopes.find((node_id, scope)))
        .set((
            ns::acked_seq.eq(0),
            ns::since_seq.eq(since_seq),
            ns::since_packet.eq(since_packet),
        ))
        .execute(conn)?;
    Ok(())
}

/// An acknowledgment of packet `packet_no` settling everything up to `high_seq`: every stream
/// of the node that existed when that packet was built moves its cursor there. Two statements
/// whatever the number of scopes.
pub fn raise(conn: &mut Conn, node_id: &str, high_seq: i64, packet_no: i64) -> StoreResult<()> {
    diesel::update(
        ns::node_scopes.filter(
            ns::node_id
                .eq(node_id)
                .and(ns::acked_seq.lt(high_seq))
                .and(ns::since_packet.lt(packet_no)),
        ),
    )
    .set(ns::acked_seq.eq(high_seq))
    .execute(conn)?;
    diesel::update(
        l::node_scope_losses.filter(
            l::node_id
                .eq(node_id)
                .and(l::cursor_seq.lt(high_seq))
                .and(l::since_packet.lt(packet_no)),
        ),
    )
    .set(l::cursor_seq.eq(high_seq))
    .execute(conn)?;
    Ok(())
}

pub fn losses_of(conn: &mut Conn, node_id: &str) -> StoreResult<Vec<ScopeLoss>> {
    Ok(l::node_scope_losses
        .filter(l::node_id.eq(node_id))
        .order(l::scope.asc())
        .load(conn)?)
}

/// Records that a node lost a scope. A loss of a scope already being drained goes on from the
/// lower of the two cursors (conservative: DELETEs of what the node may not hold are harmless).
pub fn record_loss(conn: &mut Conn, row: &ScopeLoss) -> StoreResult<()> {
    let old: Option<ScopeLoss> = l::node_scope_losses
        .find((&row.node_id, &row.scope))
        .first(conn)
        .optional()?;
    match old {
        None => {
            diesel::insert_into(l::node_scope_losses)
                .values(row)
                .execute(conn)?;
        }
        Some(old) => {
            diesel::update(l::node_scope_losses.find((&row.node_id, &row.scope)))
                .set((
                    l::cursor_seq.eq(row.cursor_seq.min(old.cursor_seq)),
                    l::loss_seq.eq(row.loss_seq.max(old.loss_seq)),
                    l::acked_at_loss.eq(row.acked_at_loss.min(old.acked_at_loss)),
                    l::since_packet.eq(row.since_packet),
                ))
                .execute(conn)?;
        }
    }
    Ok(())
}

pub fn drop_loss(conn: &mut Conn, node_id: &str, scope: &str) -> StoreResult<()> {
    diesel::delete(l::node_scope_losses.find((node_id, scope))).execute(conn)?;
    Ok(())
}

pub fn record_exit(conn: &mut Conn, row: &ScopeExit) -> StoreResult<()> {
    diesel::insert_into(x::scope_exits)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// The exits of one scope after `after_seq`, oldest first, at most `limit` (by the primary key
/// `(scope, seq)`: never a row of another scope).
pub fn exits(
    conn: &mut Conn,
    scope: &str,
    after_seq: i64,
    limit: i64,
) -> StoreResult<Vec<ScopeExit>> {
    Ok(x::scope_exits
        .filter(x::scope.eq(scope).and(x::seq.gt(after_seq)))
        .order(x::seq.asc())
        .limit(limit)
        .load(conn)?)
}

pub fn set_types(conn: &mut Conn, node_id: &str, types: Option<&str>) -> StoreResult<()> {
    diesel::update(n::sync_nodes.find(node_id))
        .set(n::types.eq(types))
        .execute(conn)?;
    Ok(())
}

/// The exits of one scope and one type after `after_seq`, oldest first, at most `limit` (by the
/// primary key `(scope, seq)`: never a row of another scope).
pub fn exits_of_type(
    conn: &mut Conn,
    scope: &str,
    entity_type: &str,
    after_seq: i64,
    limit: i64,
) -> StoreResult<Vec<ScopeExit>> {
    Ok(x::scope_exits
        .filter(x::scope.eq(scope).and(x::seq.gt(after_seq)))
        .filter(x::entity_type.eq(entity_type))
        .order(x::seq.asc())
        .limit(limit)
        .load(conn)?)
}
