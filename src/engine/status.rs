//! Status views: one node's counters and the hub's statistics.

use std::collections::BTreeMap;

use crate::protocol;
use crate::protocol::api::{NodeStatus, PendingCount, ServerStatus};
use crate::store::models::Node;
use crate::store::{entities, history, nodes, queue, Conn, StoreResult};

use super::{Caller, Engine, EngineError, EngineResult};

/// Number of entities waiting in the node's queue (PROTOCOL §4): change-log entries past its
/// cursor plus its own queue rows not already counted.
pub fn pending_count(c: &mut Conn, n: &Node) -> StoreResult<i64> {
    let in_log = entities::count_pending(c, &n.id, n.acked_seq, n.registered_seq)?;
    let mut extra = 0;
    for r in queue::pending(c, &n.id, n.acked_seq, i64::MAX)? {
        match entities::get(c, &r.entity_type, &r.entity_uuid)? {
            Some(e) if entities::is_pending_in_log(&e, &n.id, n.acked_seq, n.registered_seq) => {}
            _ => extra += 1,
        }
    }
    Ok(in_log + extra)
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
            let mut pending_counts = BTreeMap::new();
            for n in nodes::list(c)? {
                pending_counts.insert(
                    n.id.clone(),
                    PendingCount {
                        pending_changes: pending_count(c, &n)?,
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
                timestamp: protocol::now_ts(),
            })
        })
    }
}
