//! Local reads and writes: entities and the outbox entry each write queues in the same transaction.

use super::*;

impl Store {
    /// A local write: the entity and its outbox entry change in one transaction.
    pub fn local_write(
        &self,
        t: &str,
        u: &str,
        op: LocalOp,
    ) -> Result<Option<QueuedChange>, NodeError> {
        self.write(|c| {
            let now = starsync_protocol::now_ts();
            let ent = get_entity_row(c, t, u)?;
            if matches!(op, LocalOp::Delete) {
                match &ent {
                    None => {
                        return Err(NodeError::NotFound(format!(
                            "no entity {t}/{u} on this node (run `sync` first if it exists on \
                             the server, or queue a raw DELETE with `queue`)"
                        )))
                    }
                    Some(e) if e.deleted => return Ok(None),
                    Some(_) => {}
                }
            }
            let pending = entry_in_state(c, t, u, PENDING)?;
            let known = ent
                .as_ref()
                .map(|e| e.server_known || e.server_version > 0)
                .unwrap_or(false);
            let base = match &pending {
                Some(p) => p.base_version,
                None => ent.as_ref().map(|e| e.server_version).unwrap_or(0),
            };
            let (operation, data, local): (String, Option<String>, Option<Option<String>>) =
                match op {
                    LocalOp::Put(d) => {
                        let o = if known || base > 0 {
                            "UPDATE"
                        } else {
                            "INSERT"
                        };
                        (o.to_string(), Some(d.clone()), Some(Some(d)))
                    }
                    LocalOp::Delete => ("DELETE".to_string(), None, Some(None)),
                    LocalOp::Raw {
                        operation,
                        data,
                        apply_locally,
                    } => {
                        let local = if !apply_locally {
                            None
                        } else if operation == "DELETE" {
                            Some(None)
                        } else {
                            Some(data.clone())
                        };
                        (operation, data, local)
                    }
                };
            // The local entity: Some(Some(data)) = live with data, Some(None) = deleted.
            if let Some(local) = local {
                let row = EntityRow {
                    entity_type: t.to_string(),
                    entity_uuid: u.to_string(),
                    deleted: local.is_none(),
                    data: local
                        .or_else(|| ent.as_ref().map(|e| e.data.clone()))
                        .unwrap_or_else(|| "{}".to_string()),
                    server_version: ent.as_ref().map(|e| e.server_version).unwrap_or(0),
                    server_known: known,
                    server_data: ent.as_ref().and_then(|e| e.server_data.clone()),
                    updated_at: now.clone(),
                };
                upsert_entity(c, &row)?;
            }
            let change_id = uuid::Uuid::new_v4().to_string();
            let replaced_pending = pending.is_some();
            match pending {
                Some(p) => {
                    diesel::update(outbox::table.find(p.id))
                        .set((
                            outbox::change_id.eq(&change_id),
                            outbox::operation.eq(&operation),
                            outbox::data.eq(&data),
                            outbox::updated_at.eq(&now),
                        ))
                        .execute(c)?;
                }
                None => {
                    diesel::insert_into(outbox::table)
                        .values(&NewOutbox {
                            change_id: &change_id,
                            entity_type: t,
                            entity_uuid: u,
                            operation: &operation,
                            base_version: base,
                            data: data.as_deref(),
                            updated_at: &now,
                            created_at: &now,
                            state: PENDING,
                        })
                        .execute(c)?;
                }
            }
            Ok(Some(QueuedChange {
                change_id,
                entity_type: t.to_string(),
                entity_uuid: u.to_string(),
                operation,
                base_version: base,
                replaced_pending,
            }))
        })
    }

    pub fn get_entity(&self, t: &str, u: &str) -> Result<Option<Entity>, NodeError> {
        self.read(|c| {
            let Some(row) = get_entity_row(c, t, u)? else {
                return Ok(None);
            };
            let states: Vec<String> = outbox::table
                .filter(outbox::entity_type.eq(t).and(outbox::entity_uuid.eq(u)))
                .select(outbox::state)
                .load(c)?;
            Ok(Some(to_entity(
                row,
                sync_state(states.iter().map(|s| s.as_str())),
            )))
        })
    }

    /// Live entities of a type, ordered by uuid; `after` and `limit` page through big sets.
    pub fn list_entities(
        &self,
        t: &str,
        include_deleted: bool,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<Entity>, NodeError> {
        self.read(|c| {
            let mut q = local_entities::table
                .filter(local_entities::entity_type.eq(t))
                .select(EntityRow::as_select())
                .order(local_entities::entity_uuid.asc())
                .into_boxed();
            if !include_deleted {
                q = q.filter(local_entities::deleted.eq(false));
            }
            if let Some(a) = after {
                q = q.filter(local_entities::entity_uuid.gt(a.to_string()));
            }
            if let Some(l) = limit {
                q = q.limit(l);
            }
            let rows: Vec<EntityRow> = q.load(c)?;
            let states: Vec<(String, String)> = outbox::table
                .filter(outbox::entity_type.eq(t))
                .select((outbox::entity_uuid, outbox::state))
                .load(c)?;
            let mut by_uuid: HashMap<String, Vec<String>> = HashMap::new();
            for (u, s) in states {
                by_uuid.entry(u).or_default().push(s);
            }
            Ok(rows
                .into_iter()
                .map(|r| {
                    let st = by_uuid
                        .get(&r.entity_uuid)
                        .map(|v| sync_state(v.iter().map(|s| s.as_str())))
                        .unwrap_or(SyncState::Synced);
                    to_entity(r, st)
                })
                .collect())
        })
    }

    /// Entity types present locally.
    pub fn entity_types(&self) -> Result<Vec<String>, NodeError> {
        self.read(|c| {
            Ok(local_entities::table
                .select(local_entities::entity_type)
                .distinct()
                .order(local_entities::entity_type.asc())
                .load(c)?)
        })
    }
}

pub(super) fn get_entity_row(
    c: &mut SqliteConnection,
    t: &str,
    u: &str,
) -> Result<Option<EntityRow>, NodeError> {
    Ok(local_entities::table
        .find((t, u))
        .select(EntityRow::as_select())
        .first(c)
        .optional()?)
}

pub(super) fn upsert_entity(c: &mut SqliteConnection, row: &EntityRow) -> Result<(), NodeError> {
    diesel::insert_into(local_entities::table)
        .values(row)
        .on_conflict((local_entities::entity_type, local_entities::entity_uuid))
        .do_update()
        .set(row)
        .execute(c)?;
    Ok(())
}

pub(super) fn entry_in_state(
    c: &mut SqliteConnection,
    t: &str,
    u: &str,
    state: &str,
) -> Result<Option<OutboxRow>, NodeError> {
    Ok(outbox::table
        .filter(
            outbox::entity_type
                .eq(t)
                .and(outbox::entity_uuid.eq(u))
                .and(outbox::state.eq(state)),
        )
        .select(OutboxRow::as_select())
        .order(outbox::id.asc())
        .first(c)
        .optional()?)
}

pub(super) fn entry_by_change_id(
    c: &mut SqliteConnection,
    change_id: &str,
) -> Result<Option<OutboxRow>, NodeError> {
    Ok(outbox::table
        .filter(outbox::change_id.eq(change_id))
        .select(OutboxRow::as_select())
        .first(c)
        .optional()?)
}

pub(super) fn failed_by_key(c: &mut SqliteConnection, key: &str) -> Result<OutboxRow, NodeError> {
    let row = match key.parse::<i64>() {
        Ok(id) => outbox::table
            .find(id)
            .select(OutboxRow::as_select())
            .first(c)
            .optional()?,
        Err(_) => entry_by_change_id(c, key)?,
    };
    match row {
        Some(r) if r.state == FAILED => Ok(r),
        Some(r) => Err(NodeError::Invalid(format!(
            "change {} is {}, not failed",
            r.id, r.state
        ))),
        None => Err(NodeError::NotFound(format!(
            "no failed change {key:?}; `starsync-node failed` lists them"
        ))),
    }
}
