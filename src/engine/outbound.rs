//! Building the hub's packet for a node: its pending queue, oldest first, up to `batch_size`.
//!
//! The queue is the change log (`entities` ordered by `seq`) seen through the node's cursor,
//! plus the node's own `sync_changes` rows: the rule in [`crate::store::pending`], whose SQL
//! encoding picks the log's side here. See docs/design.md.

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::store::models::{Entity, Node, OutPacket};
use crate::store::{entities, pending, queue, Conn, StoreError, StoreResult};
use starsync_protocol::{self, Change, Packet, PACKET_FORMAT};

/// The entries a packet will carry, and what acknowledging it settles.
pub struct Selection {
    pub entities: Vec<Entity>,
    /// After acknowledgment, the node's cursor moves to this sequence number.
    pub high_seq: i64,
    /// More entries were pending than one packet holds.
    pub more: bool,
}

/// Picks the node's next `limit` pending entries. `last_seq` is the highest sequence number
/// handed out so far (inside the current transaction).
pub fn select_pending(
    conn: &mut Conn,
    node: &Node,
    limit: usize,
    last_seq: i64,
) -> StoreResult<Selection> {
    let fetch = limit as i64 + 1;
    let cursor = node.acked_seq;
    let log = pending::log_entries(conn, node, fetch)?;
    let rows = queue::pending(conn, &node.id, cursor, fetch)?;

    // Both lists are complete up to their last fetched seq when they were cut off.
    let bound_of = |len: usize, last: Option<i64>| {
        if len as i64 == fetch {
            last.unwrap_or(i64::MAX)
        } else {
            i64::MAX
        }
    };
    let bound = bound_of(log.len(), log.last().map(|e| e.seq))
        .min(bound_of(rows.len(), rows.last().map(|r| r.seq)));

    // One entry per entity, at its latest reason to be sent.
    let mut by_key: HashMap<(String, String), (i64, Option<Entity>)> = HashMap::new();
    for e in log {
        by_key.insert(
            (e.entity_type.clone(), e.entity_uuid.clone()),
            (e.seq, Some(e)),
        );
    }
    for r in rows {
        let key = (r.entity_type, r.entity_uuid);
        let slot = by_key.entry(key).or_insert((r.seq, None));
        slot.0 = slot.0.max(r.seq);
    }
    let mut items: Vec<((String, String), i64, Option<Entity>)> = by_key
        .into_iter()
        .map(|(k, (s, e))| (k, s, e))
        .filter(|(_, s, _)| *s <= bound)
        .collect();
    items.sort_by_key(|(_, s, _)| *s);
    let more = items.len() > limit || bound != i64::MAX;
    items.truncate(limit);
    let high_seq = if more {
        items.last().map(|(_, s, _)| *s).unwrap_or(cursor)
    } else {
        last_seq
    };
    let mut out = Vec::with_capacity(items.len());
    for ((t, u), _, e) in items {
        let e = match e {
            Some(e) => e,
            None => entities::get(conn, &t, &u)?.ok_or_else(|| {
                StoreError::Corrupt(format!("queued entity {t}/{u} does not exist"))
            })?,
        };
        out.push(e);
    }
    Ok(Selection {
        entities: out,
        high_seq,
        more,
    })
}

/// Numbers the next hub packet for `node` (mutating its counters), records what its
/// acknowledgment settles, and returns the packet.
pub fn build_packet(
    conn: &mut Conn,
    node: &mut Node,
    server_node_id: &str,
    schema_version: &str,
    limit: usize,
    last_seq: i64,
    now: &str,
) -> StoreResult<Packet> {
    let sel = select_pending(conn, node, limit, last_seq)?;
    node.sent_packet_no += 1;
    node.last_sync_out = Some(now.to_string());
    queue::record_out_packet(
        conn,
        &OutPacket {
            node_id: node.id.clone(),
            packet_no: node.sent_packet_no,
            high_seq: sel.high_seq,
            change_count: sel.entities.len() as i64,
            created_at: now.to_string(),
        },
    )?;
    let cursor = node.acked_seq;
    let mut changes = Vec::with_capacity(sel.entities.len());
    for e in sel.entities {
        changes.push(to_change(e, cursor)?);
    }
    Ok(Packet {
        format: PACKET_FORMAT,
        schema_version: schema_version.to_string(),
        sender_node_id: server_node_id.to_string(),
        receiver_node_id: node.id.clone(),
        packet_no: node.sent_packet_no as u64,
        ack_packet_no: node.received_packet_no as u64,
        created_at: now.to_string(),
        more: sel.more,
        changes,
    })
}

/// The change a node receives for an entity's current state.
fn to_change(e: Entity, cursor: i64) -> StoreResult<Change> {
    let operation = if e.is_deleted {
        starsync_protocol::Operation::Delete
    } else if e.created_seq > cursor {
        starsync_protocol::Operation::Insert
    } else {
        starsync_protocol::Operation::Update
    };
    let data = if e.is_deleted {
        None
    } else {
        Some(RawValue::from_string(e.data).map_err(|err| {
            StoreError::Corrupt(format!(
                "entity {}/{} holds invalid JSON: {err}",
                e.entity_type, e.entity_uuid
            ))
        })?)
    };
    // Deterministic: the same state always travels under the same change_id.
    let change_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{}/{}/{}", e.entity_type, e.entity_uuid, e.version).as_bytes(),
    )
    .to_string();
    Ok(Change {
        change_id,
        entity_type: e.entity_type,
        entity_uuid: e.entity_uuid,
        operation: operation.as_str().to_string(),
        base_version: None,
        version: Some(e.version as u64),
        updated_at: e.updated_at,
        data,
    })
}
