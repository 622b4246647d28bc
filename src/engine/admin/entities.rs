//! Direct entity reads and writes by the admin: hub-authored versions sent to every node.

use crate::engine::apply::{entity_size_rule, field_versions_after, SeqAlloc};
use crate::engine::{Engine, EngineError, EngineResult};
use crate::store::models::{Entity, ScopeExit};
use crate::store::{entities, queue, scopes, Conn};
use starsync_protocol::api::{EntityPage, EntityTypeList, EntityView};
use starsync_protocol::{validate_entity_data, EntityData, EntityId, EntityType, InvalidId};

/// The most entities one page may hold (the default page is 100).
pub const MAX_PAGE: i64 = 1000;

/// The most types `list_entity_types` reports; a hub with more has a naming problem that a
/// longer list would not help with.
const MAX_TYPES: usize = 10_000;

impl Engine {
    /// One page of entities of a type, by id (the admin's entity browser). `after` is the last
    /// id of the previous page (it need not exist: paging goes on from where it would be); the answer's `next_after` is the next page's `after`, `None` on
    /// the last page (one extra row is read to know, so a full last page does not lead to an
    /// empty one).
    pub fn list_entities(
        &self,
        entity_type: &str,
        after: Option<&str>,
        limit: i64,
    ) -> EngineResult<EntityPage> {
        let invalid = |e: InvalidId| EngineError::InvalidRequest(e.message);
        EntityType::parse(entity_type).map_err(invalid)?;
        if let Some(a) = after {
            EntityId::parse(a)
                .map_err(|e| EngineError::InvalidRequest(format!("after: {}", e.message)))?;
        }
        // The API refuses a limit outside 1..=MAX_PAGE (`api::extract::limit_param`); the clamp
        // only keeps other callers from reading the whole table.
        let limit = limit.clamp(1, MAX_PAGE);
        self.read(|c| {
            let mut rows = entities::page(c, entity_type, after, limit + 1)?;
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let next_after = if more {
                rows.last().map(|e| e.entity_uuid.clone())
            } else {
                None
            };
            Ok(EntityPage {
                entities: rows
                    .into_iter()
                    .map(entity_view)
                    .collect::<EngineResult<_>>()?,
                next_after,
            })
        })
    }

    /// Every entity type the hub stores (tombstones count), sorted.
    pub fn list_entity_types(&self) -> EngineResult<EntityTypeList> {
        self.read(|c| {
            Ok(EntityTypeList {
                entity_types: entities::types(c, MAX_TYPES)?,
            })
        })
    }

    pub fn get_entity(&self, entity_type: &str, uuid: &str) -> EngineResult<EntityView> {
        check_entity_key(entity_type, uuid)?;
        self.read(|c| {
            entities::get(c, entity_type, uuid)?
                .map(entity_view)
                .ok_or_else(|| EngineError::NotFound(format!("no entity {entity_type}/{uuid}")))?
        })
    }

    /// An admin write: a new server version for every node (allowed on immutable types too:
    /// immutable means "not writable by nodes").
    pub fn put_entity(
        &self,
        entity_type: &str,
        uuid: &str,
        data: Option<EntityData>,
    ) -> EngineResult<EntityView> {
        check_entity_key(entity_type, uuid)?;
        let limit = self.settings.server.max_entity_bytes;
        let data = data.map(|d| sized(admin_data(d)?, limit)).transpose()?;
        if let (Some(sc), Some(d)) = (self.scoping(), &data) {
            // The admin may write any scope, or none (then only `*` nodes see it), but not a
            // value that cannot be a scope.
            let field = sc.field(entity_type);
            if !sc.is_global(entity_type)
                && crate::engine::scopes::read_field(d, field)
                    == crate::engine::scopes::FieldValue::Invalid
            {
                return Err(EngineError::InvalidRequest(format!(
                    "{field} must be a string of 1-128 characters other than *"
                )));
            }
        }
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
                    Some(e) if e.is_deleted => return entity_view(e),
                    Some(_) => {}
                }
            }
            entity_view(admin_write(c, self, entity_type, uuid, data, &now)?)
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

pub(crate) fn check_entity_key(entity_type: &str, uuid: &str) -> EngineResult<()> {
    let invalid = |e: InvalidId| EngineError::InvalidRequest(e.message);
    EntityType::parse(entity_type).map_err(invalid)?;
    EntityId::parse(uuid).map_err(invalid)?;
    Ok(())
}

/// Writes a hub-authored version (`data` None = delete). Sent to every node.
pub(super) fn admin_write(
    c: &mut Conn,
    engine: &Engine,
    entity_type: &str,
    uuid: &str,
    data: Option<String>,
    now: &str,
) -> EngineResult<Entity> {
    let mut seq = SeqAlloc::begin(c)?;
    let s = seq.take();
    let current = entities::get(c, entity_type, uuid)?;
    // The hub changed the fields that differ (author NULL); a creation or a deletion changes
    // every field (stored as NULL, PROTOCOL §5.1).
    let field_versions = match (&current, &data) {
        (Some(e), Some(d)) if !e.is_deleted => Some(field_versions_after(e, d, None)?),
        _ => None,
    };
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
        field_versions,
        scope: None,
    };
    let mut ent = ent;
    if let Some(sc) = engine.scoping() {
        // The admin writes any scope; an entity that leaves one leaves an exit (PROTOCOL §10).
        ent.scope = sc.entity_scope(entity_type, &ent.data);
        if let Some(left) = current.as_ref().and_then(|e| e.scope.clone()) {
            if Some(&left) != ent.scope.as_ref() {
                scopes::record_exit(
                    c,
                    &ScopeExit {
                        scope: left,
                        seq: s,
                        entity_type: entity_type.to_string(),
                        entity_uuid: uuid.to_string(),
                        created_at: now.to_string(),
                    },
                )?;
            }
        }
    }
    entities::upsert(c, &ent)?;
    queue::clear_entity(c, entity_type, uuid)?;
    seq.finish(c)?;
    Ok(ent)
}

/// An admin's new state for an entity: the same rule as a node's change
/// ([`validate_entity_data`]), answered 422. Kept as the text sent, numbers and all.
pub(super) fn admin_data(data: EntityData) -> EngineResult<String> {
    validate_entity_data(data.as_str()).map_err(|r| EngineError::InvalidRequest(r.message))?;
    Ok(data.into_string())
}

/// An admin write obeys the same entity size rule as nodes ([`entity_size_rule`]); breaking it
/// is 413 `entity_too_large` (a node's change is rejected per change with the same reason).
pub(super) fn sized(data: String, limit: usize) -> EngineResult<String> {
    entity_size_rule(&data, limit).map_err(|r| EngineError::EntityTooLarge(r.message))?;
    Ok(data)
}

/// Data exactly as stored (the text its author wrote).
pub(super) fn stored_data(text: String, what: &str) -> EngineResult<EntityData> {
    EntityData::from_json(text).map_err(|e| {
        EngineError::Store(crate::store::StoreError::Corrupt(format!(
            "{what} holds invalid JSON: {e}"
        )))
    })
}

pub(crate) fn entity_view(e: Entity) -> EngineResult<EntityView> {
    let data = if e.is_deleted {
        None
    } else {
        let what = format!("entity {}/{}", e.entity_type, e.entity_uuid);
        Some(stored_data(e.data, &what)?)
    };
    Ok(EntityView {
        data,
        entity_type: e.entity_type,
        entity_uuid: e.entity_uuid,
        version: e.version,
        deleted: e.is_deleted,
        updated_at: e.updated_at,
    })
}
