//! Conflicts: listing the history rows and resolving manual conflicts.

use crate::engine::{Engine, EngineError, EngineResult};
use crate::store::history::HistoryFilter;
use crate::store::models::{HistoryRow, Node};
use crate::store::pending::View;
use crate::store::{entities, history};
use starsync_protocol::api::{ConflictRow, EntityView, ResolveRequest};
use starsync_protocol::{Resolution, Winner};

use super::entities::{admin_data, admin_write, entity_view, sized, stored_data};

impl Engine {
    /// Conflict rows, newest first. `viewer`: the node whose token asks; with scopes it sees
    /// the rows of an entity only while the entity is in its view (PROTOCOL §10), so rows are
    /// filtered and more are read until the page is full or the history ends.
    pub fn list_conflicts(
        &self,
        filter: HistoryFilter,
        before_id: Option<&str>,
        viewer: Option<&Node>,
    ) -> EngineResult<Vec<ConflictRow>> {
        self.read(|c| {
            let mut filter = filter;
            if let Some(id) = before_id {
                let row = history::get(c, id)?.ok_or_else(|| {
                    EngineError::InvalidRequest(format!("before={id:?} is not a conflict id"))
                })?;
                filter.before_seq = Some(row.seq);
            }
            let view = match viewer {
                Some(n) if self.settings.scopes.is_some() => Some(self.view(c, n)?),
                _ => None,
            };
            let Some(view) = view else {
                return history::list(c, &filter)?
                    .into_iter()
                    .map(conflict_row)
                    .collect::<EngineResult<_>>();
            };
            let mut out = Vec::new();
            loop {
                let page = history::list(c, &filter)?;
                let full = page.len() as i64 == filter.limit;
                filter.before_seq = page.last().map(|r| r.seq);
                for r in page {
                    if out.len() as i64 == filter.limit {
                        break;
                    }
                    if sees_entity(c, &view, &r.entity_type, &r.entity_uuid)? {
                        out.push(conflict_row(r)?);
                    }
                }
                if !full || out.len() as i64 == filter.limit {
                    return Ok(out);
                }
            }
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
                (Some(d), None) => Choice::Data(sized(admin_data(d.clone())?, limit)?),
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
                    admin_write(c, self, &row.entity_type, &row.entity_uuid, Some(d), &now)?
                }
                Choice::History => admin_write(
                    c,
                    self,
                    &row.entity_type,
                    &row.entity_uuid,
                    // The stored version was within the limit when it arrived; the limit may
                    // have been lowered since.
                    Some(sized(row.serialized_data.clone(), limit)?),
                    &now,
                )?,
            };
            if !history::mark_resolved(c, id, &resolved.to_string(), &now)? {
                return Err(EngineError::AlreadyResolved(format!(
                    "conflict {id} was already resolved"
                )));
            }
            entity_view(ent)
        })?;
        tracing::info!(conflict = %id, entity_type = %view.entity_type, version = view.version, "conflict resolved by admin");
        Ok(view)
    }
}

/// Whether the node's view holds the entity now (its type and current scope).
pub(crate) fn sees_entity(
    c: &mut crate::store::Conn,
    view: &View,
    entity_type: &str,
    uuid: &str,
) -> EngineResult<bool> {
    Ok(entities::head(c, entity_type, uuid)?
        .is_some_and(|h| view.sees(&h.entity_type, h.scope.as_deref())))
}

fn conflict_row(r: HistoryRow) -> EngineResult<ConflictRow> {
    let conflict_resolution = r
        .conflict_resolution
        .parse()
        .map_err(|e| crate::store::StoreError::Corrupt(format!("history row {}: {e}", r.id)))?;
    Ok(ConflictRow {
        serialized_data: stored_data(r.serialized_data, &format!("history row {}", r.id))?,
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
