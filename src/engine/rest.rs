//! A node's entity reads and writes over REST (PROTOCOL §11.3): `GET`, `PUT`, `PATCH` and
//! `DELETE /api/sync/entities/{type}/{id}` with a node token. Each write is one node change
//! through [`Engine::apply_node_change`]; `If-Match` gives its base version.
//!
//! A lost conflict answers 409 with the server's entity, but its transaction commits: the
//! history row, and under a field merge the node's other fields, are kept (the engine's
//! `EngineError::LostConflict` is returned after the commit, never from inside it).

use super::admin::entities::{check_entity_key, entity_view};
use super::apply::Applied;
use super::live::AdminEvent;
use super::{Engine, EngineError, EngineResult};
use crate::store::models::{Entity, Node};
use crate::store::{entities, pending::View};
use starsync_protocol::api::EntityView;
use starsync_protocol::{
    validate_change, Change, ChangeRejection, ClockRule, EntityData, RejectReason, Winner,
};

/// What a node asks of an entity.
#[derive(Debug)]
pub enum RestWrite {
    /// `PUT`: the whole new state.
    Put(EntityData),
    /// `PATCH`: only the top-level fields to change (PROTOCOL §5.1's partial update).
    Patch(EntityData),
    Delete,
}

/// `If-Match` as the base version: `"<version>"` (the `ETag` this API hands out), or `*` or
/// absent for "the current version" (None). Anything else is malformed (422).
pub fn parse_if_match(raw: Option<&str>) -> EngineResult<Option<i64>> {
    let Some(raw) = raw.map(str::trim) else {
        return Ok(None);
    };
    if raw == "*" {
        return Ok(None);
    }
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| (0..=super::watermelon::MAX_CURSOR).contains(v))
        .map(Some)
        .ok_or_else(|| {
            EngineError::InvalidRequest(format!(
                "If-Match {:?} is not an entity version as the ETag gives it: a quoted whole \
                 number, e.g. \"3\" with the quotes",
                raw.chars().take(40).collect::<String>()
            ))
        })
}

/// Whether the node may see the entity (the hub without scopes: always).
fn sees(engine: &Engine, view: &View, e: &Entity) -> bool {
    engine.scoping().is_none() || view.sees(&e.entity_type, e.scope.as_deref())
}

fn not_found(entity_type: &str, uuid: &str) -> EngineError {
    EngineError::NotFound(format!("no entity {entity_type}/{uuid}"))
}

/// A rejected write as the HTTP error it is. Forbidden by the node's view or the type: 403
/// (the same sentence whether the entity exists or not, PROTOCOL §10); too large: 413; any
/// other rule of the data: 422.
fn rejection(r: ChangeRejection) -> EngineError {
    match r.reason {
        RejectReason::ForbiddenScope
        | RejectReason::ForbiddenType
        | RejectReason::ImmutableType => EngineError::Forbidden(r.message),
        RejectReason::EntityTooLarge => EngineError::EntityTooLarge(r.message),
        _ => EngineError::InvalidRequest(r.message),
    }
}

/// How a write ended inside its transaction (the error of a lost conflict is made after the
/// commit).
enum Outcome {
    Done(Entity),
    Lost {
        entity: Entity,
        conflict_id: Option<String>,
        message: String,
    },
}

impl Engine {
    /// A node's read of one entity (a tombstone too, `deleted: true`). Outside its scopes or
    /// types: 404, exactly as for an entity that does not exist.
    pub fn node_get_entity(
        &self,
        node: &Node,
        entity_type: &str,
        uuid: &str,
    ) -> EngineResult<EntityView> {
        check_entity_key(entity_type, uuid)?;
        self.read(|c| {
            let view = self.view(c, node)?;
            match entities::get(c, entity_type, uuid)? {
                Some(e) if sees(self, &view, &e) => entity_view(e),
                _ => Err(not_found(entity_type, uuid)),
            }
        })
    }

    /// A node's write of one entity: its change based on `if_match` (None: the current
    /// version, so the last writer wins), under every rule of a node change. Answers the
    /// entity as it now stands; a lost conflict is `EngineError::LostConflict` (after its
    /// transaction committed).
    pub fn node_write_entity(
        &self,
        node: &Node,
        entity_type: &str,
        uuid: &str,
        if_match: Option<i64>,
        write: RestWrite,
    ) -> EngineResult<EntityView> {
        check_entity_key(entity_type, uuid)?;
        let now = starsync_protocol::now_ts();
        let clock = ClockRule::now(self.settings.sync.max_clock_skew_secs);
        let (operation, data, fields) = match write {
            RestWrite::Put(d) => ("UPDATE", Some(d), None),
            RestWrite::Patch(d) => {
                let names = super::apply::object_fields(d.as_str())
                    .ok_or_else(|| {
                        EngineError::InvalidRequest("data must be a JSON object".into())
                    })?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect::<Vec<_>>();
                ("UPDATE", Some(d), Some(names))
            }
            RestWrite::Delete => ("DELETE", None, None),
        };
        let data = data
            .map(|d| serde_json::value::RawValue::from_string(d.into_string()))
            .transpose()
            .map_err(|e| EngineError::InvalidRequest(format!("data: {e}")))?;
        let change = Change {
            change_id: uuid::Uuid::new_v4().to_string(),
            entity_type: entity_type.to_string(),
            entity_uuid: uuid.to_string(),
            operation: operation.into(),
            base_version: Some(0),
            version: None,
            updated_at: now.clone(),
            data,
            fields,
        };
        let valid = validate_change(&change, &clock).map_err(rejection)?;
        let outcome = self.apply_once_or_isolated(|isolate| {
            self.write_sequenced(|conn, seq| {
                let view = self.view(conn, node)?;
                let mut ctx = self.node_ctx(&node.id, &now, seq);
                // `If-Match` is the base whoever wrote the current version: several apps may
                // share this node's token.
                ctx.strict_base = true;
                let existing = ctx.current(conn, entity_type, uuid)?;
                let visible = existing.as_ref().filter(|e| sees(self, &view, e));
                // A deletion or an `If-Match` needs an entity the node can see; outside its
                // view that is the same 404 as a missing one (the scope rules would say
                // `forbidden_scope`, which tells the entity exists).
                if visible.is_none() && (operation == "DELETE" || if_match.is_some()) {
                    return Err(not_found(entity_type, uuid));
                }
                let current = visible.map_or(0, |e| e.version);
                let base = if_match.unwrap_or(current);
                if let (Some(e), true) = (visible, base > current) {
                    return Ok((
                        Outcome::Lost {
                            entity: e.clone(),
                            conflict_id: None,
                            message: format!(
                                "If-Match names version {base}, ahead of the server's version \
                                 {current}: take the server's entity"
                            ),
                        },
                        Vec::new(),
                    ));
                }
                let change = Change {
                    base_version: Some(base as u64),
                    ..change.clone()
                };
                let applied =
                    self.apply_node_change(conn, &mut ctx, &view, &change, &valid, isolate)?;
                let applied = applied.map_err(rejection)?;
                ctx.flush(conn)?;
                let after = ctx
                    .current(conn, entity_type, uuid)?
                    .ok_or_else(|| not_found(entity_type, uuid))?;
                drop(ctx);
                Ok(match applied {
                    Applied::Done => (Outcome::Done(after), Vec::new()),
                    Applied::Conflict(c) => {
                        let event = AdminEvent::conflict(node, &c);
                        let outcome = if c.conflict_resolution.winner == Winner::Client {
                            Outcome::Done(after)
                        } else {
                            Outcome::Lost {
                                entity: after,
                                message: format!(
                                    "this change conflicts with a newer version on the server \
                                     and lost ({}); the losing version is kept in history row \
                                     {}",
                                    c.conflict_resolution, c.conflict_id
                                ),
                                conflict_id: Some(c.conflict_id),
                            }
                        };
                        (outcome, vec![event])
                    }
                })
            })
        })?;
        tracing::info!(
            node = %node.code,
            entity_type,
            operation,
            lost = matches!(outcome, Outcome::Lost { .. }),
            "node entity write"
        );
        match outcome {
            Outcome::Done(e) => entity_view(e),
            Outcome::Lost {
                entity,
                conflict_id,
                message,
            } => Err(EngineError::LostConflict {
                message,
                entity: Box::new(entity_view(entity)?),
                conflict_id,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match() {
        assert_eq!(parse_if_match(None).unwrap(), None);
        assert_eq!(parse_if_match(Some("*")).unwrap(), None);
        assert_eq!(parse_if_match(Some("\"3\"")).unwrap(), Some(3));
        assert_eq!(parse_if_match(Some(" \"0\" ")).unwrap(), Some(0));
        for bad in ["3", "W/\"3\"", "\"-1\"", "\"a\"", "\"3\", \"4\"", ""] {
            assert!(parse_if_match(Some(bad)).is_err(), "{bad}");
        }
    }
}
