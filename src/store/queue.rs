//! Per-node queue rows (`sync_changes`) and the record of packets built for each node
//! (`sync_packets_out`).

use diesel::prelude::*;

use super::models::{InPacketReport, OutPacket, QueueRow};
use super::schema::sync_changes::dsl as q;
use super::schema::sync_packets_in::dsl as pi;
use super::schema::sync_packets_out::dsl as p;
use super::{Conn, StoreResult};

/// Queues the entity for one node at sequence `seq` (replacing an older row for it).
pub fn requeue(conn: &mut Conn, row: &QueueRow) -> StoreResult<()> {
    let updated =
        diesel::update(q::sync_changes.find((&row.node_id, &row.entity_type, &row.entity_uuid)))
            .set((q::seq.eq(row.seq), q::created_at.eq(&row.created_at)))
            .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(q::sync_changes)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// True when any per-node queue row exists at all (usually none: they exist only between a
/// lost conflict and its acknowledgment).
pub fn any(conn: &mut Conn) -> StoreResult<bool> {
    Ok(q::sync_changes
        .select(q::node_id)
        .first::<String>(conn)
        .optional()?
        .is_some())
}

/// A new change of the entity supersedes every per-node row for it: the change log now
/// delivers the newer state to everyone who needs it.
pub fn clear_entity(conn: &mut Conn, entity_type: &str, uuid: &str) -> StoreResult<()> {
    diesel::delete(
        q::sync_changes.filter(q::entity_type.eq(entity_type).and(q::entity_uuid.eq(uuid))),
    )
    .execute(conn)?;
    Ok(())
}

pub fn pending(
    conn: &mut Conn,
    node_id: &str,
    cursor: i64,
    limit: i64,
) -> StoreResult<Vec<QueueRow>> {
    Ok(q::sync_changes
        .filter(q::node_id.eq(node_id).and(q::seq.gt(cursor)))
        .order(q::seq.asc())
        .limit(limit)
        .load(conn)?)
}

/// Drops rows the node has acknowledged.
pub fn prune(conn: &mut Conn, node_id: &str, cursor: i64) -> StoreResult<()> {
    diesel::delete(q::sync_changes.filter(q::node_id.eq(node_id).and(q::seq.le(cursor))))
        .execute(conn)?;
    Ok(())
}

pub fn record_out_packet(conn: &mut Conn, row: &OutPacket) -> StoreResult<()> {
    diesel::insert_into(p::sync_packets_out)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Settles an acknowledgment (cumulative): forgets the records of the node's packets numbered
/// at most `packet_no` and returns the newest of them as `(packet_no, high_seq)`, or `None`
/// when none was recorded.
///
/// One `DELETE … RETURNING` instead of a read and a delete: it runs under the writer lock on
/// every exchange that acknowledges an answer, where each statement is a round trip on
/// PostgreSQL. A record is needed only until its packet is acknowledged: a later
/// acknowledgment names a later packet, whose own record it reads.
pub fn settle_acked(
    conn: &mut Conn,
    node_id: &str,
    packet_no: i64,
) -> StoreResult<Option<(i64, i64)>> {
    let settled: Vec<(i64, i64)> = diesel::delete(
        p::sync_packets_out.filter(p::node_id.eq(node_id).and(p::packet_no.le(packet_no))),
    )
    .returning((p::packet_no, p::high_seq))
    .get_results(conn)?;
    Ok(settled.into_iter().max_by_key(|&(no, _)| no))
}

/// How many of a node's newest packet reports are kept for answering resent duplicates.
pub const KEPT_REPORTS: i64 = 32;

/// Stores what applying a node packet reported, and forgets reports older than
/// [`KEPT_REPORTS`] packets.
pub fn save_report(conn: &mut Conn, row: &InPacketReport) -> StoreResult<()> {
    diesel::insert_into(pi::sync_packets_in)
        .values(row)
        .execute(conn)?;
    diesel::delete(
        pi::sync_packets_in.filter(
            pi::node_id
                .eq(&row.node_id)
                .and(pi::packet_no.le(row.packet_no - KEPT_REPORTS)),
        ),
    )
    .execute(conn)?;
    Ok(())
}

pub fn report(conn: &mut Conn, node_id: &str, packet_no: i64) -> StoreResult<Option<String>> {
    Ok(pi::sync_packets_in
        .filter(pi::node_id.eq(node_id).and(pi::packet_no.eq(packet_no)))
        .select(pi::report)
        .first(conn)
        .optional()?)
}
