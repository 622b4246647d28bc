//! Queries on `sync_nodes`.

use diesel::prelude::*;

use super::models::Node;
use super::schema::sync_nodes::dsl as n;
use super::{Conn, StoreResult};

pub fn insert(conn: &mut Conn, node: &Node) -> StoreResult<()> {
    diesel::insert_into(n::sync_nodes)
        .values(node)
        .execute(conn)?;
    Ok(())
}

pub fn by_id(conn: &mut Conn, id: &str) -> StoreResult<Option<Node>> {
    Ok(n::sync_nodes.find(id).first(conn).optional()?)
}

pub fn by_code(conn: &mut Conn, code: &str) -> StoreResult<Option<Node>> {
    Ok(n::sync_nodes
        .filter(n::code.eq(code))
        .first(conn)
        .optional()?)
}

/// Finds the node whose token hashes to `hash`. Lookup is by hash, never by token, so the
/// timing of the index lookup tells an attacker nothing about any token.
pub fn by_token_hash(conn: &mut Conn, hash: &str) -> StoreResult<Option<Node>> {
    Ok(n::sync_nodes
        .filter(n::token_hash.eq(hash))
        .first(conn)
        .optional()?)
}

pub fn list(conn: &mut Conn) -> StoreResult<Vec<Node>> {
    Ok(n::sync_nodes.order(n::created_at.asc()).load(conn)?)
}

pub fn count(conn: &mut Conn) -> StoreResult<i64> {
    Ok(n::sync_nodes.count().get_result(conn)?)
}

/// True when some node's code equals `code` ignoring case (codes name files, and file systems
/// may fold case).
pub fn code_taken(conn: &mut Conn, code: &str) -> StoreResult<bool> {
    let lower = code.to_ascii_lowercase();
    let codes: Vec<String> = n::sync_nodes.select(n::code).load(conn)?;
    Ok(codes.iter().any(|c| c.to_ascii_lowercase() == lower))
}

pub fn set_active(conn: &mut Conn, id: &str, active: bool) -> StoreResult<usize> {
    Ok(diesel::update(n::sync_nodes.find(id))
        .set(n::active.eq(active))
        .execute(conn)?)
}

pub fn set_token_hash(conn: &mut Conn, id: &str, hash: &str) -> StoreResult<usize> {
    Ok(diesel::update(n::sync_nodes.find(id))
        .set(n::token_hash.eq(hash))
        .execute(conn)?)
}

/// Writes the exchange counters of a node in one statement.
pub fn save_counters(conn: &mut Conn, node: &Node) -> StoreResult<()> {
    diesel::update(n::sync_nodes.find(&node.id))
        .set((
            n::received_packet_no.eq(node.received_packet_no),
            n::sent_packet_no.eq(node.sent_packet_no),
            n::acked_packet_no.eq(node.acked_packet_no),
            n::acked_seq.eq(node.acked_seq),
            n::last_sync_in.eq(&node.last_sync_in),
            n::last_sync_out.eq(&node.last_sync_out),
        ))
        .execute(conn)?;
    Ok(())
}
