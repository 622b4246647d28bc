//! What the node reports: status counts, failed changes, conflicts; and row-to-API conversions.

use super::*;

impl Store {
    pub fn status(&self) -> Result<Status, NodeError> {
        self.read(|c| {
            let st = get_state(c)?;
            let stored: i64 = packets_out::table
                .filter(packets_out::packet_no.gt(st.server_acked_packet_no))
                .count()
                .get_result(c)?;
            let conflicts: i64 = conflicts::table.count().get_result(c)?;
            Ok(Status {
                pending: count_state(c, PENDING)?,
                in_flight: count_state(c, IN_FLIGHT)?,
                failed: count_state(c, FAILED)?,
                stored_packets: stored,
                sent_packet_no: st.sent_packet_no,
                server_acked_packet_no: st.server_acked_packet_no,
                received_packet_no: st.received_packet_no,
                conflicts,
                last_attempt_at: st.last_attempt_at,
                last_success_at: st.last_success_at,
                last_error: st.last_error,
                last_error_at: st.last_error_at,
                last_export_at: st.last_export_at,
                last_import_at: st.last_import_at,
            })
        })
    }

    pub fn pending_count(&self) -> Result<i64, NodeError> {
        self.read(|c| count_state(c, PENDING))
    }

    /// Outbox entries in one state, oldest first.
    pub fn outbox(&self, state: Option<&str>) -> Result<Vec<OutboxRow>, NodeError> {
        self.read(|c| {
            let mut q = outbox::table
                .select(OutboxRow::as_select())
                .order(outbox::id.asc())
                .into_boxed();
            if let Some(s) = state {
                q = q.filter(outbox::state.eq(s.to_string()));
            }
            Ok(q.load(c)?)
        })
    }

    pub fn failed(&self) -> Result<Vec<FailedChange>, NodeError> {
        Ok(self
            .outbox(Some(FAILED))?
            .into_iter()
            .map(to_failed)
            .collect())
    }

    /// Puts a failed change back in the outbox (with a new change id).
    pub fn retry_failed(&self, key: &str) -> Result<QueuedChange, NodeError> {
        self.write(|c| {
            let row = failed_by_key(c, key)?;
            if entry_in_state(c, &row.entity_type, &row.entity_uuid, PENDING)?.is_some() {
                return Err(NodeError::Invalid(format!(
                    "a newer change of {}/{} is already pending and replaces this one; drop this \
                     failed change with `failed drop {}`",
                    row.entity_type, row.entity_uuid, row.id
                )));
            }
            let change_id = uuid::Uuid::new_v4().to_string();
            diesel::update(outbox::table.find(row.id))
                .set((
                    outbox::state.eq(PENDING),
                    outbox::change_id.eq(&change_id),
                    outbox::packet_no.eq(None::<i64>),
                    outbox::error.eq(None::<String>),
                    outbox::error_reason.eq(None::<String>),
                    outbox::updated_at.eq(starsync_protocol::now_ts()),
                ))
                .execute(c)?;
            Ok(QueuedChange {
                change_id,
                entity_type: row.entity_type,
                entity_uuid: row.entity_uuid,
                operation: row.operation,
                base_version: row.base_version,
                replaced_pending: false,
            })
        })
    }

    /// Forgets a failed change; when no other local change of the entity is on its way, the
    /// local entity returns to the last server state this node knows.
    pub fn drop_failed(&self, key: &str) -> Result<FailedChange, NodeError> {
        self.write(|c| {
            let row = failed_by_key(c, key)?;
            diesel::delete(outbox::table.find(row.id)).execute(c)?;
            let others: i64 = outbox::table
                .filter(
                    outbox::entity_type
                        .eq(&row.entity_type)
                        .and(outbox::entity_uuid.eq(&row.entity_uuid))
                        .and(outbox::state.ne(FAILED)),
                )
                .count()
                .get_result(c)?;
            if others == 0 {
                if let Some(mut e) = get_entity_row(c, &row.entity_type, &row.entity_uuid)? {
                    match e.server_data.clone() {
                        Some(d) => {
                            e.data = d;
                            e.deleted = false;
                        }
                        None => e.deleted = true,
                    }
                    e.updated_at = starsync_protocol::now_ts();
                    upsert_entity(c, &e)?;
                }
            }
            Ok(to_failed(row))
        })
    }

    pub fn conflicts(&self) -> Result<Vec<ConflictRecord>, NodeError> {
        self.read(|c| {
            let rows: Vec<ConflictRow> = conflicts::table
                .select(ConflictRow::as_select())
                .order(conflicts::reported_at.desc())
                .load(c)?;
            rows.into_iter().map(to_conflict).collect()
        })
    }
}

pub(super) fn sync_state<'a>(states: impl Iterator<Item = &'a str>) -> SyncState {
    let mut best = SyncState::Synced;
    for s in states {
        best = match (best, s) {
            (_, PENDING) | (SyncState::Pending, _) => SyncState::Pending,
            (_, IN_FLIGHT) | (SyncState::InFlight, _) => SyncState::InFlight,
            (_, FAILED) | (SyncState::Failed, _) => SyncState::Failed,
            (b, _) => b,
        };
    }
    best
}

pub(super) fn to_entity(r: EntityRow, sync_state: SyncState) -> Entity {
    Entity {
        // Stored only after parsing as JSON (local writes and server packets alike).
        data: starsync_protocol::EntityData::from_json(r.data).unwrap_or_else(|_| {
            starsync_protocol::EntityData::from_value(&serde_json::Value::Null)
        }),
        entity_type: r.entity_type,
        entity_uuid: r.entity_uuid,
        deleted: r.deleted,
        server_version: r.server_version,
        sync_state,
        updated_at: r.updated_at,
    }
}

pub(super) fn to_failed(r: OutboxRow) -> FailedChange {
    FailedChange {
        id: r.id,
        change_id: r.change_id,
        entity_type: r.entity_type,
        entity_uuid: r.entity_uuid,
        operation: r.operation,
        base_version: r.base_version,
        data: r
            .data
            .and_then(|d| starsync_protocol::EntityData::from_json(d).ok()),
        error: r.error.unwrap_or_default(),
        reason: r.error_reason.unwrap_or_default(),
        packet_no: r.packet_no,
        updated_at: r.updated_at,
    }
}

pub(super) fn to_conflict(r: ConflictRow) -> Result<ConflictRecord, NodeError> {
    let corrupt = |e: starsync_protocol::vocab::UnknownName| {
        NodeError::Protocol(format!("stored conflict {}: {e}", r.conflict_id))
    };
    Ok(ConflictRecord {
        resolution: r.resolution.parse().map_err(corrupt)?,
        conflict_resolution: r.conflict_resolution.parse().map_err(corrupt)?,
        conflict_id: r.conflict_id,
        entity_type: r.entity_type,
        entity_uuid: r.entity_uuid,
        change_id: r.change_id,
        server_version: r.server_version,
        local_data: r
            .local_data
            .and_then(|d| starsync_protocol::EntityData::from_json(d).ok()),
        reported_at: r.reported_at,
    })
}
