//! Status views: one node's counters and the hub's statistics. Their `pending_changes` come
//! from [`crate::store::pending`], where the pending-queue rule lives.

use std::collections::BTreeMap;

use crate::store::{entities, history, nodes, pending};
use starsync_protocol;
use starsync_protocol::api::{NodeStatus, PendingCount, ServerStatus};

use super::{Caller, Engine, EngineError, EngineResult};

/// Node counts and queue lengths of the whole hub, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubGauges {
    pub nodes_active: i64,
    pub nodes_disabled: i64,
    /// Pending changes summed over every node (disabled ones too: their queues keep filling).
    pub pending_total: i64,
    /// The longest single queue.
    pub pending_max: i64,
}

impl Engine {
    /// [`HubGauges`], counted with the one-pass [`pending::counts`] (a scan of the change log:
    /// callers should not run it on every request; `/metrics` caches it).
    pub fn hub_gauges(&self) -> EngineResult<HubGauges> {
        self.read(|c| {
            let list = nodes::list(c)?;
            let views = self.views(c, &list)?;
            let counts = pending::counts(c, &views)?;
            let active = list.iter().filter(|n| n.active).count() as i64;
            Ok(HubGauges {
                nodes_active: active,
                nodes_disabled: list.len() as i64 - active,
                pending_total: counts.values().sum(),
                pending_max: counts.values().copied().max().unwrap_or(0),
            })
        })
    }

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
            let v = self.view(c, &n)?;
            Ok(NodeStatus {
                pending_changes: pending::count(c, &v)?,
                scopes: v.scoped.then(|| v.scope_list()),
                types: v.type_list(),
                unresolved_conflicts: match caller {
                    Caller::Node(_) if self.settings.scopes.is_some() => {
                        self.visible_unresolved(c, &v)?
                    }
                    _ => history::count_unresolved(c, Some(&n.id))?,
                },
                node_id: n.id,
                node_code: n.code,
                node_name: n.name,
                active: n.active,
                last_sync_in: n.last_sync_in,
                last_sync_out: n.last_sync_out,
                sent_packet_no: n.sent_packet_no,
                received_packet_no: n.received_packet_no,
                acked_packet_no: n.acked_packet_no,
                last_device: n.last_device,
            })
        })
    }

    /// The node's unresolved conflicts whose entity it still sees (a node token's view).
    fn visible_unresolved(
        &self,
        c: &mut crate::store::Conn,
        v: &crate::store::pending::View,
    ) -> EngineResult<i64> {
        let rows = history::list(
            c,
            &history::HistoryFilter {
                node_id: Some(v.node_id.clone()),
                unresolved_only: true,
                limit: i64::MAX,
                ..Default::default()
            },
        )?;
        let mut n = 0;
        for r in rows {
            if super::admin::conflicts::sees_entity(c, v, &r.entity_type, &r.entity_uuid)? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn server_status(&self) -> EngineResult<ServerStatus> {
        self.read(|c| {
            let list = nodes::list(c)?;
            let views = self.views(c, &list)?;
            let counts = pending::counts(c, &views)?;
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
            let view = self.view(c, &node)?;
            let pending = crate::store::pending::count(c, &view)?;
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
        let view = if self.settings.scopes.is_none() {
            super::live::StreamView {
                node_id: node.id.clone(),
                scopes: None,
                types: None,
            }
        } else {
            // The stream decides whom to wake from this copy of the node's view; a PATCH of
            // its scopes or types ends the stream (`view_changed`), so it is never stale.
            let v = self.read(|c| Ok(self.view(c, node)?))?;
            let mut scopes = v.scope_list();
            if !v.all {
                scopes.push(crate::store::scopes::GLOBAL.to_string());
            }
            super::live::StreamView {
                node_id: node.id.clone(),
                scopes: Some(scopes),
                types: v.type_list(),
            }
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
