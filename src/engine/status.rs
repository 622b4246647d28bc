//! Status views: one node's counters and the hub's statistics. Their `pending_changes` come
//! from [`crate::store::pending`], where the pending-queue rule lives.

use std::collections::BTreeMap;

use crate::store::{entities, history, nodes, pending};
use starsync_protocol;
use starsync_protocol::api::{NodeStatus, PendingCount, ServerStatus};

use super::{Caller, Engine, EngineError, EngineResult};

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
                pending_changes: pending::count(c, &n)?,
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
            let counts = pending::counts(c, &list)?;
            let packets_received = list.iter().map(|n| n.received_packet_no).sum();
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
                packets_received,
            })
        })
    }
}

impl Engine {
    /// What a `pending` event says (PROTOCOL §12): the node's `pending_changes` and the hub's
    /// log position (the highest committed sequence number, the cursor of section 11's
    /// clients). `None` when the node is gone or disabled: its stream ends. Counted only when an
    /// event is sent, never per commit.
    pub fn live_pending(&self, node_id: &str) -> EngineResult<Option<(i64, i64)>> {
        self.read(|c| {
            let Some(node) = crate::store::nodes::by_id(c, node_id)? else {
                return Ok(None);
            };
            if !node.active {
                return Ok(None);
            }
            let pending = crate::store::pending::count(c, &node)?;
            let cursor = crate::store::last_seq(c)?;
            Ok(Some((pending, cursor)))
        })
    }

    /// Opens a node's event stream in this process's hub, within `server.max_event_streams`.
    pub fn open_node_stream(
        &self,
        node: &crate::store::models::Node,
    ) -> EngineResult<(
        super::live::StreamTicket,
        std::sync::Arc<super::live::NodeSignal>,
    )> {
        let view = super::live::StreamView {
            node_id: node.id.clone(),
            scopes: None,
            types: None,
        };
        self.live.open_node(view).map_err(too_many)
    }

    /// Opens a dashboard's event stream, within the same limit.
    pub fn open_admin_stream(
        &self,
    ) -> EngineResult<(
        super::live::StreamTicket,
        std::sync::Arc<super::live::AdminSignal>,
    )> {
        self.live.open_admin().map_err(too_many)
    }
}

fn too_many(e: super::live::TooManyStreams) -> EngineError {
    EngineError::TooManyStreams(format!(
        "this server has {} event streams open, its limit (server.max_event_streams); poll \
         meanwhile and open the stream again later",
        e.0
    ))
}
