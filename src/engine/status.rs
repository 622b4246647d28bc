//! Status views: one node's counters and the hub's statistics.

use std::collections::{BTreeMap, HashMap};

use crate::store::models::Node;
use crate::store::{entities, history, nodes, queue, Conn, StoreResult};
use starsync_protocol;
use starsync_protocol::api::{NodeStatus, PendingCount, ServerStatus};

use super::{Caller, Engine, EngineError, EngineResult};

/// Number of entities waiting in the node's queue (PROTOCOL §4): change-log entries past its
/// cursor plus its own queue rows not already counted.
pub fn pending_count(c: &mut Conn, n: &Node) -> StoreResult<i64> {
    let in_log = entities::count_pending(c, &n.id, n.acked_seq, n.registered_seq)?;
    Ok(in_log + extra_pending(c, n)?)
}

/// Pending counts of many nodes with one pass over the change log.
///
/// Why: counting per node scans the log from each node's cursor, so an operator listing 1,000
/// nodes that are all 100,000 changes behind waited 53 s. Here the log is streamed once (in
/// `seq` order, bounded pages) into sorted sequence lists, and each node's count is a few binary
/// searches. With `c` the cursor and `r` the registration point of node N, the entries pending
/// for N (`seq > c`, not held by N, and not a tombstone older than N: `deleted ⇒ seq > r`) are
///
/// `|seq > c| − |held by N, seq > c| − |deleted, c < seq ≤ r| + |deleted and held by N, c < seq ≤ r|`.
pub fn pending_counts(c: &mut Conn, nodes: &[Node]) -> StoreResult<HashMap<String, i64>> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut all = Vec::new();
    let mut deleted = Vec::new();
    let mut held = vec![Vec::new(); nodes.len()];
    let mut held_deleted = vec![Vec::new(); nodes.len()];
    let mut after = i64::MIN;
    loop {
        let page = entities::log_page(c, after, 50_000)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (seq, holder, is_deleted) in page {
            all.push(seq);
            if is_deleted {
                deleted.push(seq);
            }
            if let Some(i) = holder.as_deref().and_then(|h| index.get(h)) {
                held[*i].push(seq);
                if is_deleted {
                    held_deleted[*i].push(seq);
                }
            }
        }
    }
    // All lists are in ascending seq order (filled from a seq-ordered scan).
    let above = |v: &[i64], x: i64| (v.len() - v.partition_point(|s| *s <= x)) as i64;
    let between = |v: &[i64], lo: i64, hi: i64| {
        if hi <= lo {
            0
        } else {
            (v.partition_point(|s| *s <= hi) - v.partition_point(|s| *s <= lo)) as i64
        }
    };
    let mut out = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let (cur, reg) = (n.acked_seq, n.registered_seq);
        let in_log = above(&all, cur) - above(&held[i], cur) - between(&deleted, cur, reg)
            + between(&held_deleted[i], cur, reg);
        out.insert(n.id.clone(), in_log + extra_pending(c, n)?);
    }
    Ok(out)
}

/// The node's own queue rows not already pending through the change log.
fn extra_pending(c: &mut Conn, n: &Node) -> StoreResult<i64> {
    let mut extra = 0;
    for r in queue::pending(c, &n.id, n.acked_seq, i64::MAX)? {
        match entities::get(c, &r.entity_type, &r.entity_uuid)? {
            Some(e) if entities::is_pending_in_log(&e, &n.id, n.acked_seq, n.registered_seq) => {}
            _ => extra += 1,
        }
    }
    Ok(extra)
}

impl Engine {
    /// Status of one node; the admin or the node itself may read it.
    pub fn node_status(&self, caller: &Caller, node_id: &str) -> EngineResult<NodeStatus> {
        if let Caller::Node(me) = caller {
            if me.id != node_id {
                return Err(EngineError::Forbidden(
                    "a node may read only its own status".into(),
                ));
            }
        }
        self.read(|c| {
            let n = nodes::by_id(c, node_id)?
                .ok_or_else(|| EngineError::NotFound(format!("no node {node_id:?}")))?;
            Ok(NodeStatus {
                pending_changes: pending_count(c, &n)?,
                unresolved_conflicts: history::count_unresolved(c, Some(&n.id))?,
                node_id: n.id,
                node_code: n.code,
                node_name: n.name,
                active: n.active,
                last_sync_in: n.last_sync_in,
                last_sync_out: n.last_sync_out,
                sent_packet_no: n.sent_packet_no,
                received_packet_no: n.received_packet_no,
                acked_packet_no: n.acked_packet_no,
            })
        })
    }

    pub fn server_status(&self) -> EngineResult<ServerStatus> {
        self.read(|c| {
            let list = nodes::list(c)?;
            let counts = pending_counts(c, &list)?;
            let mut pending_counts = BTreeMap::new();
            for n in list {
                pending_counts.insert(
                    n.id.clone(),
                    PendingCount {
                        pending_changes: counts[&n.id],
                        code: n.code,
                        last_sync_in: n.last_sync_in,
                    },
                );
            }
            Ok(ServerStatus {
                total_nodes: pending_counts.len() as i64,
                server_node_id: self.server_node_id.clone(),
                entities: entities::count_live(c)?,
                unresolved_conflicts: history::count_unresolved(c, None)?,
                pending_counts,
                timestamp: starsync_protocol::now_ts(),
            })
        })
    }
}
