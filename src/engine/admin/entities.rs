//! Direct entity reads and writes by the admin: hub-authored versions sent to every node.

use crate::engine::apply::SeqAlloc;
use crate::engine::{Engine, EngineError, EngineResult};
use crate::store::models::Entity;
use crate::store::{entities, queue, Conn};
use starsync_protocol::api::EntityView;
use starsync_protocol::{EntityId, EntityType, InvalidId};

impl Engine {
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
            Some(d) if d.is_object() => Some(d.to_string()),
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

fn check_entity_key(entity_type: &str, uuid: &str) -> EngineResult<()> {
    let invalid = |e: InvalidId| EngineError::InvalidRequest(e.message);
    EntityType::parse(entity_type).map_err(invalid)?;
    EntityId::parse(uuid).map_err(invalid)?;
    Ok(())
}

/// Writes a hub-authored version (`data` None = delete). Sent to every node.
pub(super) fn admin_write(
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

pub(super) fn entity_view(e: Entity) -> EntityView {
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
