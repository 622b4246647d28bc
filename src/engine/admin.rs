//! Administrative operations: registration, node management, conflict resolution and direct
//! entity writes by the admin.

use crate::store::history::HistoryFilter;
use crate::store::models::{Entity, HistoryRow, Node};
use crate::store::{entities, history, nodes, queue, Conn};
use starsync_protocol::api::{
    ConflictRow, EntityView, NodeInfo, RegisterRequest, RegisterResponse, ResolveRequest,
    TokenResponse,
};
use starsync_protocol::{self, EntityId, EntityType, NodeCode, Resolution, Winner};

use super::apply::{entity_size_rule, SeqAlloc};
use super::auth::{new_token, token_hash};
use super::{Engine, EngineError, EngineResult};

/// Version string reported to registering nodes.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Engine {
    /// Registers a node. The token is returned here and never again.
    pub fn register(&self, req: RegisterRequest) -> EngineResult<RegisterResponse> {
        let code = req.code.trim().to_string();
        NodeCode::parse(&code).map_err(|e| EngineError::InvalidRequest(e.message))?;
        let name = req
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| code.clone());
        if name.chars().count() > 200 {
            return Err(EngineError::InvalidRequest(
                "name must be at most 200 characters".into(),
            ));
        }
        if req
            .description
            .as_ref()
            .map(|d| d.chars().count())
            .unwrap_or(0)
            > 2000
        {
            return Err(EngineError::InvalidRequest(
                "description must be at most 2000 characters".into(),
            ));
        }
        let token = new_token();
        let node = self.write(|conn| {
            if code.eq_ignore_ascii_case(&self.server_code) || nodes::code_taken(conn, &code)? {
                return Err(EngineError::CodeTaken(format!(
                    "node code {code:?} is already registered; choose another code"
                )));
            }
            let node = Node {
                id: uuid::Uuid::new_v4().to_string(),
                code: code.clone(),
                name,
                description: req.description.clone(),
                token_hash: token_hash(&token),
                active: true,
                created_at: starsync_protocol::now_ts(),
                last_sync_in: None,
                last_sync_out: None,
                received_packet_no: 0,
                sent_packet_no: 0,
                acked_packet_no: 0,
                acked_seq: 0,
                registered_seq: crate::store::last_seq(conn)?,
            };
            nodes::insert(conn, &node)?;
            Ok(node)
        })?;
        tracing::info!(node = %node.code, node_id = %node.id, "node registered");
        Ok(RegisterResponse {
            node_id: node.id,
            auth_token: token,
            server_node_id: self.server_node_id.clone(),
            server_version: SERVER_VERSION.to_string(),
            schema_version: self.settings.sync.schema_version.clone(),
        })
    }

    /// Finds a node by id or, failing that, by code (the CLI accepts either).
    pub fn find_node(&self, id_or_code: &str) -> EngineResult<Node> {
        self.read(|c| {
            if let Some(n) = nodes::by_id(c, id_or_code)? {
                return Ok(n);
            }
            nodes::by_code(c, id_or_code)?
                .ok_or_else(|| EngineError::NotFound(format!("no node {id_or_code:?}")))
        })
    }

    /// Finds a node by id only (HTTP routes name nodes by id).
    pub fn find_node_by_id(&self, id: &str) -> EngineResult<Node> {
        self.read(|c| {
            nodes::by_id(c, id)?.ok_or_else(|| EngineError::NotFound(format!("no node {id:?}")))
        })
    }

    pub fn list_nodes(&self) -> EngineResult<Vec<NodeInfo>> {
        self.read(|c| {
            let list = nodes::list(c)?;
            let counts = super::status::pending_counts(c, &list)?;
            Ok(list
                .into_iter()
                .map(|n| {
                    let pending = counts[&n.id];
                    node_info(n, pending)
                })
                .collect())
        })
    }

    pub fn set_node_active(&self, id_or_code: &str, active: bool) -> EngineResult<NodeInfo> {
        let node = self.find_node(id_or_code)?;
        let node = self.write(|c| {
            nodes::set_active(c, &node.id, active)?;
            Ok(nodes::by_id(c, &node.id)?.expect("node exists inside the transaction"))
        })?;
        tracing::info!(node = %node.code, active, "node active flag changed");
        let pending = self.read(|c| Ok(super::status::pending_count(c, &node)?))?;
        Ok(node_info(node, pending))
    }

    /// Issues a new token; the old one stops working at once.
    pub fn rotate_token(&self, id_or_code: &str) -> EngineResult<TokenResponse> {
        let node = self.find_node(id_or_code)?;
        let token = new_token();
        self.write(|c| Ok(nodes::set_token_hash(c, &node.id, &token_hash(&token))?))?;
        tracing::info!(node = %node.code, "node token rotated");
        Ok(TokenResponse {
            node_id: node.id,
            auth_token: token,
        })
    }

    pub fn list_conflicts(
        &self,
        filter: HistoryFilter,
        before_id: Option<&str>,
    ) -> EngineResult<Vec<ConflictRow>> {
        self.read(|c| {
            let mut filter = filter;
            if let Some(id) = before_id {
                let row = history::get(c, id)?.ok_or_else(|| {
                    EngineError::InvalidRequest(format!("before={id:?} is not a conflict id"))
                })?;
                filter.before_seq = Some(row.seq);
            }
            history::list(c, &filter)?
                .into_iter()
                .map(conflict_row)
                .collect::<EngineResult<_>>()
        })
    }

    /// Resolves a manual conflict: new data, the stored losing version, or the server state.
    pub fn resolve_conflict(&self, id: &str, req: ResolveRequest) -> EngineResult<EntityView> {
        enum Choice {
            Data(String),
            History,
            Server,
        }
        let limit = self.settings.server.max_entity_bytes;
        let choice =
            match (&req.data, req.use_.as_deref()) {
                (Some(d), None) if d.is_object() => Choice::Data(sized(d.to_string(), limit)?),
                (Some(_), None) => {
                    return Err(EngineError::InvalidRequest(
                        "data must be a JSON object".into(),
                    ))
                }
                (None, Some("history")) => Choice::History,
                (None, Some("server")) => Choice::Server,
                (None, Some(other)) => {
                    return Err(EngineError::InvalidRequest(format!(
                        "use must be \"history\" or \"server\", not {other:?}"
                    )))
                }
                _ => return Err(EngineError::InvalidRequest(
                    "give exactly one of {\"data\": {...}} or {\"use\": \"history\"|\"server\"}"
                        .into(),
                )),
            };
        let now = starsync_protocol::now_ts();
        let view = self.write(|c| {
            let row = history::get(c, id)?
                .ok_or_else(|| EngineError::NotFound(format!("no conflict {id:?}")))?;
            if row.resolved_at.is_some() {
                return Err(EngineError::AlreadyResolved(format!(
                    "conflict {id} was already resolved ({}) by {}",
                    row.conflict_resolution,
                    row.resolved_by.as_deref().unwrap_or("?")
                )));
            }
            let pending: Resolution = row
                .conflict_resolution
                .parse()
                .map_err(|e| crate::store::StoreError::Corrupt(format!("history row {id}: {e}")))?;
            let resolved = Resolution::new(pending.strategy, Winner::Admin);
            let current = entities::get(c, &row.entity_type, &row.entity_uuid)?;
            let ent = match choice {
                Choice::Server => current.ok_or_else(|| {
                    EngineError::NotFound("the conflicting entity no longer exists".into())
                })?,
                Choice::Data(d) => {
                    admin_write(c, &row.entity_type, &row.entity_uuid, Some(d), &now)?
                }
                // The stored version was within the limit when it arrived; the limit may have
                // been lowered since.
                Choice::History => admin_write(
                    c,
                    &row.entity_type,
                    &row.entity_uuid,
                    Some(sized(row.serialized_data.clone(), limit)?),
                    &now,
                )?,
            };
            if !history::mark_resolved(c, id, &resolved.to_string(), &now)? {
                return Err(EngineError::AlreadyResolved(format!(
                    "conflict {id} was already resolved"
                )));
            }
            Ok(entity_view(ent))
        })?;
        tracing::info!(conflict = %id, entity_type = %view.entity_type, version = view.version, "conflict resolved by admin");
        Ok(view)
    }

    pub fn get_entity(&self, entity_type: &str, uuid: &str) -> EngineResult<EntityView> {
        check_entity_key(entity_type, uuid)?;
        self.read(|c| {
            entities::get(c, entity_type, uuid)?
                .map(entity_view)
                .ok_or_else(|| EngineError::NotFound(format!("no entity {entity_type}/{uuid}")))
        })
    }

    /// An admin write: a new server version for every node (allowed on immutable types too:
    /// immutable means "not writable by nodes").
    pub fn put_entity(
        &self,
        entity_type: &str,
        uuid: &str,
        data: Option<serde_json::Value>,
    ) -> EngineResult<EntityView> {
        check_entity_key(entity_type, uuid)?;
        let data = match data {
            Some(d) if d.is_object() => {
                Some(sized(d.to_string(), self.settings.server.max_entity_bytes)?)
            }
            Some(_) => {
                return Err(EngineError::InvalidRequest(
                    "data must be a JSON object".into(),
                ))
            }
            None => None,
        };
        let now = starsync_protocol::now_ts();
        let view = self.write(|c| {
            if data.is_none() {
                match entities::get(c, entity_type, uuid)? {
                    None => {
                        return Err(EngineError::NotFound(format!(
                            "no entity {entity_type}/{uuid}"
                        )))
                    }
                    // Deleting a tombstone is a no-op, as it is for nodes (PROTOCOL §5).
                    Some(e) if e.is_deleted => return Ok(entity_view(e)),
                    Some(_) => {}
                }
            }
            Ok(entity_view(admin_write(c, entity_type, uuid, data, &now)?))
        })?;
        tracing::info!(
            entity_type,
            version = view.version,
            deleted = view.deleted,
            "admin entity write"
        );
        Ok(view)
    }
}

/// An admin write obeys the same entity size rule as nodes ([`entity_size_rule`]); breaking it
/// is 413 `entity_too_large` (a node's change is rejected per change with the same reason).
fn sized(data: String, limit: usize) -> EngineResult<String> {
    entity_size_rule(&data, limit).map_err(|r| EngineError::EntityTooLarge(r.message))?;
    Ok(data)
}

fn check_entity_key(entity_type: &str, uuid: &str) -> EngineResult<()> {
    let invalid = |e: starsync_protocol::InvalidId| EngineError::InvalidRequest(e.message);
    EntityType::parse(entity_type).map_err(invalid)?;
    EntityId::parse(uuid).map_err(invalid)?;
    Ok(())
}

/// Writes a hub-authored version (`data` None = delete). Sent to every node.
fn admin_write(
    c: &mut Conn,
    entity_type: &str,
    uuid: &str,
    data: Option<String>,
    now: &str,
) -> EngineResult<Entity> {
    let mut seq = SeqAlloc::begin(c)?;
    let s = seq.take();
    let current = entities::get(c, entity_type, uuid)?;
    let ent = Entity {
        entity_type: entity_type.to_string(),
        entity_uuid: uuid.to_string(),
        is_deleted: data.is_none(),
        data: data
            .or_else(|| current.as_ref().map(|e| e.data.clone()))
            .unwrap_or_else(|| "{}".into()),
        version: current.as_ref().map(|e| e.version + 1).unwrap_or(1),
        updated_at: now.to_string(),
        author_node_id: None,
        holder_node_id: None,
        seq: s,
        created_seq: current.as_ref().map(|e| e.created_seq).unwrap_or(s),
        change_id: None,
        applied_at: now.to_string(),
    };
    entities::upsert(c, &ent)?;
    queue::clear_entity(c, entity_type, uuid)?;
    seq.finish(c)?;
    Ok(ent)
}

pub(crate) fn node_info(n: Node, pending: i64) -> NodeInfo {
    NodeInfo {
        node_id: n.id,
        code: n.code,
        name: n.name,
        description: n.description,
        active: n.active,
        created_at: n.created_at,
        last_sync_in: n.last_sync_in,
        last_sync_out: n.last_sync_out,
        pending_changes: pending,
    }
}

fn entity_view(e: Entity) -> EntityView {
    EntityView {
        data: if e.is_deleted {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null)
        },
        entity_type: e.entity_type,
        entity_uuid: e.entity_uuid,
        version: e.version,
        deleted: e.is_deleted,
        updated_at: e.updated_at,
    }
}

fn conflict_row(r: HistoryRow) -> EngineResult<ConflictRow> {
    let conflict_resolution = r
        .conflict_resolution
        .parse()
        .map_err(|e| crate::store::StoreError::Corrupt(format!("history row {}: {e}", r.id)))?;
    Ok(ConflictRow {
        serialized_data: serde_json::from_str(&r.serialized_data)
            .unwrap_or(serde_json::Value::Null),
        id: r.id,
        entity_type: r.entity_type,
        entity_uuid: r.entity_uuid,
        source_node_id: r.source_node_id,
        node_id: r.node_id,
        arrival_time: r.arrival_time,
        conflict_resolution,
        server_version: r.server_version,
        change_id: r.change_id,
        resolved_at: r.resolved_at,
        resolved_by: r.resolved_by,
    })
}
