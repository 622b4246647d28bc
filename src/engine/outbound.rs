//! Building the hub's packet for a node: its pending queue, oldest first, up to `batch_size`
//! changes and up to a byte budget.
//!
//! The queue is the change log (`entities` ordered by `seq`) seen through the node's cursor,
//! plus the node's own `sync_changes` rows: the rule in [`crate::store::pending`], whose SQL
//! encoding picks the log's side here. See docs/design.md.
//!
//! Why a byte budget: a node refuses a packet over its own limit (64 MiB by default), and since
//! packets go oldest first, a packet it cannot take would block everything behind it forever.
//! So the selection is made on entity *sizes* first ([`entities::Head`]), cut to the budget, and
//! only the chosen entities' data is loaded.

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::store::entities::Head;
use crate::store::models::{Entity, Node, OutPacket};
use crate::store::pending::View;
use crate::store::{entities, pending, queue, Conn, StoreError, StoreResult};
use starsync_protocol::{self, Change, Packet, PACKET_FORMAT};

/// Upper bound of a packet's JSON without its changes (fields, ids, timestamps), bytes.
pub const PACKET_FIELDS_BYTES: usize = 512;

/// Upper bound of one change's JSON besides its data, entity type and id: the field names, the
/// change id, operation, version and timestamp, bytes.
pub const CHANGE_FIELDS_BYTES: usize = 320;

/// The bytes a change adds to a packet's JSON, at most (the data travels verbatim).
fn change_wire_bytes(h: &Head) -> usize {
    let data = if h.is_deleted {
        0
    } else {
        h.data_len.max(0) as usize
    };
    CHANGE_FIELDS_BYTES + h.entity_type.len() + h.entity_uuid.len() + data
}

/// How large a packet may get.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// At most this many changes (`sync.batch_size`).
    pub changes: usize,
    /// The answer budget (`Settings::answer_budget`): a packet stops before a change that would
    /// take it over, but always holds at least one change, so an entity larger than the budget
    /// (stored before the limits were lowered) still moves.
    pub bytes: usize,
    /// Memory set aside for building this packet: a hard cap, which may leave the packet
    /// empty (with `more`), so the node comes back once memory is free.
    pub reserved: usize,
}

impl Budget {
    /// A packet bounded by count and the answer budget only (offline export, estimates).
    pub fn new(changes: usize, bytes: usize) -> Budget {
        Budget {
            changes,
            bytes,
            reserved: usize::MAX,
        }
    }
}

/// One entry of a packet: an entity's current state, or a DELETE because it left the node's
/// view (`gone`: no data, no version).
#[derive(Debug, Clone)]
pub struct Item {
    pub head: Head,
    pub gone: bool,
}

/// The entries a packet will carry, and what acknowledging it settles.
pub struct Selection {
    pub items: Vec<Item>,
    /// After acknowledgment, the node's cursors move to this sequence number.
    pub high_seq: i64,
    /// More entries were pending than one packet holds.
    pub more: bool,
    /// Upper bound of the packet's JSON size.
    pub bytes: usize,
}

/// Picks the node's next pending entries within `budget`. `last_seq` is the highest sequence
/// number handed out so far (inside the current transaction).
///
/// Every source (each stream of the log, the node's queue rows, exits, losses) is read from its
/// own cursor, at most `batch_size + 1` rows, in `seq` order; merged, they are complete up to
/// the lowest last `seq` of the sources that were cut (`bound`), so the packet takes entries in
/// `seq` order up to there, and acknowledging it moves every cursor to its `high_seq`.
pub fn select_pending(
    conn: &mut Conn,
    view: &View,
    budget: Budget,
    last_seq: i64,
) -> StoreResult<Selection> {
    let limit = budget.changes;
    let fetch = limit as i64 + 1;
    let mut bound = i64::MAX;
    // One entry per entity, at its latest reason to be sent.
    let mut by_key: HashMap<(String, String), (i64, Option<Head>, bool)> = HashMap::new();
    for stream in &view.streams {
        let log = pending::log_heads(conn, view, stream, fetch)?;
        if log.len() as i64 == fetch {
            bound = bound.min(log.last().map(|h| h.seq).unwrap_or(i64::MAX));
        }
        for h in log {
            by_key.insert(
                (h.entity_type.clone(), h.entity_uuid.clone()),
                (h.seq, Some(h), false),
            );
        }
    }
    for page in pending::extra_pages(conn, view, fetch)? {
        if page.cut {
            bound = bound.min(page.last_seq);
        }
        for x in page.entries {
            let gone = x.kind == pending::Extra::Gone;
            let slot = by_key
                .entry((x.entity_type, x.entity_uuid))
                .or_insert((x.seq, None, gone));
            slot.0 = slot.0.max(x.seq);
            slot.2 |= gone;
            if gone || slot.1.is_none() {
                slot.1 = Some(x.head);
            }
        }
    }
    type Candidate = ((String, String), i64, Option<Head>, bool);
    let mut items: Vec<Candidate> = by_key
        .into_iter()
        .map(|(k, (s, h, g))| (k, s, h, g))
        .filter(|(_, s, _, _)| *s <= bound)
        .collect();
    items.sort_by_key(|(_, s, _, _)| *s);
    let mut cut = items.len() > limit;
    items.truncate(limit);

    let mut chosen = Vec::with_capacity(items.len());
    let mut seqs = Vec::with_capacity(items.len());
    let mut bytes = PACKET_FIELDS_BYTES;
    for ((t, u), s, h, gone) in items {
        let h = match h {
            Some(mut h) if gone => {
                // It left the node's view: nothing of its state travels.
                h.is_deleted = true;
                h.data_len = 0;
                h
            }
            Some(h) => h,
            None => entities::head(conn, &t, &u)?.ok_or_else(|| {
                StoreError::Corrupt(format!("queued entity {t}/{u} does not exist"))
            })?,
        };
        let w = change_wire_bytes(&h);
        let over_budget = !chosen.is_empty() && bytes + w > budget.bytes;
        if over_budget || bytes + w > budget.reserved {
            cut = true;
            break;
        }
        bytes += w;
        chosen.push(Item { head: h, gone });
        seqs.push(s);
    }
    // Cut by count or bytes: settled up to the last entry taken. Otherwise every source is
    // complete up to `bound` (entries filtered out on the way are settled too), or entirely.
    let (more, high_seq) = if cut {
        (true, seqs.last().copied().unwrap_or(0))
    } else if bound != i64::MAX {
        (true, bound)
    } else {
        (false, last_seq)
    };
    Ok(Selection {
        items: chosen,
        high_seq,
        more,
        bytes,
    })
}

/// Upper bound of the JSON size of the node's next packet (read outside the write
/// transaction, to set memory aside before building it).
pub fn next_packet_bytes(conn: &mut Conn, view: &View, budget: Budget) -> StoreResult<usize> {
    Ok(select_pending(conn, view, budget, i64::MAX)?.bytes)
}

/// Loads the chosen entities (those sent with their state), in the selection's order.
fn load(conn: &mut Conn, items: &[Item]) -> StoreResult<Vec<Option<Entity>>> {
    let mut by_type: HashMap<&str, Vec<&str>> = HashMap::new();
    for h in items.iter().filter(|i| !i.gone).map(|i| &i.head) {
        by_type
            .entry(h.entity_type.as_str())
            .or_default()
            .push(h.entity_uuid.as_str());
    }
    let mut found: HashMap<(String, String), Entity> = HashMap::with_capacity(items.len());
    for (t, uuids) in by_type {
        for chunk in uuids.chunks(500) {
            for e in entities::get_many(conn, t, chunk)? {
                found.insert((e.entity_type.clone(), e.entity_uuid.clone()), e);
            }
        }
    }
    items
        .iter()
        .map(|i| {
            if i.gone {
                return Ok(None);
            }
            let h = &i.head;
            found
                .remove(&(h.entity_type.clone(), h.entity_uuid.clone()))
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "pending entity {}/{} does not exist",
                        h.entity_type, h.entity_uuid
                    ))
                })
                .map(Some)
        })
        .collect()
}

/// Numbers the next hub packet for `node` (mutating its counters), records what its
/// acknowledgment settles, and returns the packet.
#[allow(clippy::too_many_arguments)]
pub fn build_packet(
    conn: &mut Conn,
    node: &mut Node,
    view: &View,
    server_node_id: &str,
    schema_version: &str,
    budget: Budget,
    last_seq: i64,
    now: &str,
) -> StoreResult<Packet> {
    let sel = select_pending(conn, view, budget, last_seq)?;
    let chosen = load(conn, &sel.items)?;
    node.sent_packet_no += 1;
    node.last_sync_out = Some(now.to_string());
    queue::record_out_packet(
        conn,
        &OutPacket {
            node_id: node.id.clone(),
            packet_no: node.sent_packet_no,
            high_seq: sel.high_seq,
            change_count: chosen.len() as i64,
            created_at: now.to_string(),
        },
    )?;
    let mut changes = Vec::with_capacity(chosen.len());
    for (item, e) in sel.items.iter().zip(chosen) {
        changes.push(match e {
            Some(e) => {
                let cursor = view
                    .streams
                    .iter()
                    .find(|s| s.scope.is_none() || s.scope == e.scope)
                    .map_or(0, |s| s.cursor);
                to_change(e, cursor)?
            }
            None => gone_change(&item.head, now),
        });
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

/// The DELETE a node receives when an entity left its view (PROTOCOL §10): no data and no
/// version, since nothing of another scope's state may travel.
fn gone_change(h: &Head, now: &str) -> Change {
    // Deterministic per entity and log position, like the state changes' ids.
    let change_id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{}/{}/gone/{}", h.entity_type, h.entity_uuid, h.seq).as_bytes(),
    )
    .to_string();
    Change {
        change_id,
        entity_type: h.entity_type.clone(),
        entity_uuid: h.entity_uuid.clone(),
        operation: starsync_protocol::Operation::Delete.as_str().to_string(),
        base_version: None,
        version: None,
        updated_at: now.to_string(),
        data: None,
        fields: None,
    }
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
        // A server change is always the entity's whole state.
        fields: None,
    })
}
