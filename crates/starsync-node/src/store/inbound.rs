//! Answers from the server: acknowledgments first, then the server's changes (PROTOCOL §8).

use super::*;

impl Store {
    /// Local conflicts an incoming server packet will meet, so the hook can decide before the
    /// packet is applied. Entries the packet's acknowledgment settles do not count.
    pub fn local_conflicts(&self, packet: &Packet) -> Result<Vec<LocalConflict>, NodeError> {
        self.read(|c| {
            let st = get_state(c)?;
            if packet.packet_no as i64 <= st.received_packet_no {
                return Ok(Vec::new());
            }
            let open: i64 = outbox::table
                .filter(outbox::state.ne(FAILED))
                .count()
                .get_result(c)?;
            if open == 0 {
                return Ok(Vec::new());
            }
            let ack = (packet.ack_packet_no as i64).max(st.server_acked_packet_no);
            let mut out = Vec::new();
            for ch in &packet.changes {
                let entries: Vec<OutboxRow> = outbox::table
                    .filter(
                        outbox::entity_type
                            .eq(&ch.entity_type)
                            .and(outbox::entity_uuid.eq(&ch.entity_uuid)),
                    )
                    .select(OutboxRow::as_select())
                    .load(c)?;
                let live: Vec<&OutboxRow> = entries
                    .iter()
                    .filter(|e| {
                        e.state == PENDING
                            || (e.state == IN_FLIGHT && e.packet_no.unwrap_or(0) > ack)
                    })
                    .collect();
                if live.is_empty() {
                    continue;
                }
                let in_flight = live.iter().any(|e| e.state == IN_FLIGHT);
                out.push(local_conflict_of(c, ch, in_flight)?);
            }
            Ok(out)
        })
    }

    /// Handles one server packet (an HTTP answer or an imported file) in one transaction:
    /// first its acknowledgment (and, for an answer, the rejected changes and conflicts of the
    /// packet just applied), then its changes when it is newer than the last one applied.
    pub fn apply_server_packet(
        &self,
        packet: &Packet,
        meta: Option<AnswerMeta<'_>>,
        decisions: &HashMap<(String, String), LocalDecision>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<AnswerOutcome, NodeError> {
        self.write(|c| {
            let now = starsync_protocol::now_ts();
            let mut st = get_state(c)?;
            let mut out = AnswerOutcome::default();
            let mut conflicted = HashSet::new();
            if let Some(meta) = &meta {
                for e in meta.errors {
                    let Some(row) = entry_by_change_id(c, &e.change_id)? else {
                        continue;
                    };
                    if row.state == FAILED {
                        continue;
                    }
                    diesel::update(outbox::table.find(row.id))
                        .set((
                            outbox::state.eq(FAILED),
                            outbox::error.eq(&e.message),
                            outbox::error_reason.eq(if e.reason == RejectReason::Unknown {
                                e.error.as_str()
                            } else {
                                e.reason.as_str()
                            }),
                        ))
                        .execute(c)?;
                    let row = entry_by_change_id(c, &e.change_id)?.expect("row just updated");
                    out.failed.push(to_failed(row));
                }
                for k in meta.conflicts {
                    conflicted.insert(k.change_id.clone());
                    let local_data = entry_by_change_id(c, &k.change_id)?.and_then(|r| r.data);
                    let row = ConflictRow {
                        conflict_id: k.conflict_id.clone(),
                        entity_type: k.entity_type.clone(),
                        entity_uuid: k.entity_uuid.clone(),
                        change_id: k.change_id.clone(),
                        resolution: k.resolution.to_string(),
                        conflict_resolution: k.conflict_resolution.to_string(),
                        server_version: k.server_version,
                        local_data,
                        reported_at: now.clone(),
                    };
                    diesel::insert_into(conflicts::table)
                        .values(&row)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                    out.conflicts.push(to_conflict(row)?);
                }
            }
            process_ack(c, &mut st, packet.ack_packet_no as i64, &conflicted)?;

            if packet.packet_no as i64 > st.received_packet_no {
                out.applied_packet = true;
                let total = packet.changes.len();
                // With no local change waiting (an initial sync, a reading desktop), no server
                // change can meet one: skip the per-change outbox lookup.
                let outbox_live = outbox::table
                    .filter(outbox::state.ne(FAILED))
                    .select(outbox::id)
                    .first::<i64>(c)
                    .optional()?
                    .is_some();
                for (i, ch) in packet.changes.iter().enumerate() {
                    apply_server_change(c, ch, decisions, outbox_live, &mut out)?;
                    if (i + 1) % 1000 == 0 || i + 1 == total {
                        progress(i + 1, total);
                    }
                }
                st.received_packet_no = packet.packet_no as i64;
            }
            save_state(c, &st)?;
            Ok(out)
        })
    }

    /// `packet_gap`: the server has applied every packet before `expected`. That is an
    /// acknowledgment of `expected - 1`; the next exchange resends stored packets from
    /// `expected` on.
    pub fn handle_gap(&self, expected: u64) -> Result<(), NodeError> {
        self.write(|c| {
            let mut st = get_state(c)?;
            let applied = expected as i64 - 1;
            if applied < st.server_acked_packet_no {
                return Err(NodeError::Protocol(format!(
                    "the server expects packet {expected}, but it had already acknowledged up to \
                     packet {} (those packets are gone from this node). The server's database \
                     was probably restored from an older backup: register this node again \
                     (`starsync-node init --force …`) after exporting any local data you need",
                    st.server_acked_packet_no
                )));
            }
            process_ack(c, &mut st, applied, &HashSet::new())?;
            save_state(c, &st)?;
            Ok(())
        })
    }

    pub fn mark_imported(&self) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::update(node_state::table.find(1))
                .set(node_state::last_import_at.eq(starsync_protocol::now_ts()))
                .execute(c)?;
            Ok(())
        })
    }
}

/// The server has applied every node packet up to `ack`: their in-flight entries are done
/// (the server has their state unless it reported a conflict), their stored bytes can go.
fn process_ack(
    c: &mut SqliteConnection,
    st: &mut StateRow,
    ack: i64,
    conflicted: &HashSet<String>,
) -> Result<(), NodeError> {
    if ack > st.sent_packet_no {
        // The server applied packets this node does not remember numbering (its database was
        // restored from a backup): never reuse those numbers, or the server would drop new
        // changes as duplicates.
        tracing::warn!(
            ack,
            sent = st.sent_packet_no,
            "server acknowledged packets this node never numbered; skipping ahead"
        );
        st.sent_packet_no = ack;
    }
    if ack <= st.server_acked_packet_no {
        return Ok(());
    }
    let acked: Vec<OutboxRow> = outbox::table
        .filter(outbox::state.eq(IN_FLIGHT).and(outbox::packet_no.le(ack)))
        .select(OutboxRow::as_select())
        .load(c)?;
    for e in &acked {
        let target = local_entities::table.find((&e.entity_type, &e.entity_uuid));
        if conflicted.contains(&e.change_id) {
            diesel::update(target)
                .set(local_entities::server_known.eq(true))
                .execute(c)?;
        } else {
            let server_data = if e.operation == "DELETE" {
                None
            } else {
                e.data.clone()
            };
            diesel::update(target)
                .set((
                    local_entities::server_known.eq(true),
                    local_entities::server_data.eq(server_data),
                ))
                .execute(c)?;
        }
    }
    diesel::delete(
        outbox::table.filter(outbox::state.eq(IN_FLIGHT).and(outbox::packet_no.le(ack))),
    )
    .execute(c)?;
    diesel::delete(packets_out::table.filter(packets_out::packet_no.le(ack))).execute(c)?;
    st.server_acked_packet_no = ack;
    Ok(())
}

/// Applies one server change, unless a local change of the entity is still on its way: then
/// the local data stays (the server decides when it gets the local change), unless the
/// conflict hook chose otherwise for a change that is only pending.
fn apply_server_change(
    c: &mut SqliteConnection,
    ch: &Change,
    decisions: &HashMap<(String, String), LocalDecision>,
    outbox_live: bool,
    out: &mut AnswerOutcome,
) -> Result<(), NodeError> {
    let Some(op) = Operation::parse(&ch.operation) else {
        tracing::warn!(operation = %ch.operation, "ignoring server change with unknown operation");
        return Ok(());
    };
    let version = ch.version.unwrap_or(0) as i64;
    if !outbox_live {
        take_server_state(c, ch, op, version)?;
        out.received += 1;
        out.entity_types.insert(ch.entity_type.clone());
        return Ok(());
    }
    let states: Vec<String> = outbox::table
        .filter(
            outbox::entity_type
                .eq(&ch.entity_type)
                .and(outbox::entity_uuid.eq(&ch.entity_uuid))
                .and(outbox::state.ne(FAILED)),
        )
        .select(outbox::state)
        .load(c)?;
    if states.is_empty() {
        take_server_state(c, ch, op, version)?;
        out.received += 1;
        out.entity_types.insert(ch.entity_type.clone());
        return Ok(());
    }
    let in_flight = states.iter().any(|s| s == IN_FLIGHT);
    let key = (ch.entity_type.clone(), ch.entity_uuid.clone());
    let decision = match decisions.get(&key) {
        Some(d) if !in_flight => d.clone(),
        _ => LocalDecision::KeepLocal,
    };
    let conflict = local_conflict_of(c, ch, in_flight)?;
    match &decision {
        LocalDecision::TakeServer => {
            diesel::delete(
                outbox::table.filter(
                    outbox::entity_type
                        .eq(&ch.entity_type)
                        .and(outbox::entity_uuid.eq(&ch.entity_uuid))
                        .and(outbox::state.eq(PENDING)),
                ),
            )
            .execute(c)?;
            take_server_state(c, ch, op, version)?;
            out.received += 1;
            out.entity_types.insert(ch.entity_type.clone());
        }
        LocalDecision::Merge(v) if v.is_object() => {
            let merged = v.to_string();
            let now = starsync_protocol::now_ts();
            upsert_entity(
                c,
                &EntityRow {
                    entity_type: ch.entity_type.clone(),
                    entity_uuid: ch.entity_uuid.clone(),
                    data: merged.clone(),
                    deleted: false,
                    server_version: version,
                    server_known: true,
                    server_data: if op == Operation::Delete {
                        None
                    } else {
                        Some(ch.data_text().to_string())
                    },
                    updated_at: now.clone(),
                },
            )?;
            diesel::update(
                outbox::table.filter(
                    outbox::entity_type
                        .eq(&ch.entity_type)
                        .and(outbox::entity_uuid.eq(&ch.entity_uuid))
                        .and(outbox::state.eq(PENDING)),
                ),
            )
            .set((
                outbox::change_id.eq(uuid::Uuid::new_v4().to_string()),
                outbox::operation.eq("UPDATE"),
                outbox::base_version.eq(version),
                outbox::data.eq(Some(merged)),
                outbox::updated_at.eq(now),
            ))
            .execute(c)?;
            out.received += 1;
            out.entity_types.insert(ch.entity_type.clone());
        }
        _ => out.kept_local += 1,
    }
    out.local_conflicts.push((conflict, decision));
    Ok(())
}

fn local_conflict_of(
    c: &mut SqliteConnection,
    ch: &Change,
    in_flight: bool,
) -> Result<LocalConflict, NodeError> {
    let local = get_entity_row(c, &ch.entity_type, &ch.entity_uuid)?;
    Ok(LocalConflict {
        entity_type: ch.entity_type.clone(),
        entity_uuid: ch.entity_uuid.clone(),
        local_data: local
            .filter(|e| !e.deleted)
            .and_then(|e| serde_json::from_str(&e.data).ok()),
        server_data: if ch.operation == "DELETE" {
            None
        } else {
            serde_json::from_str(ch.data_text()).ok()
        },
        server_version: ch.version.unwrap_or(0),
        in_flight,
    })
}

/// The local entity becomes exactly the server's state (INSERT and UPDATE are both upserts).
fn take_server_state(
    c: &mut SqliteConnection,
    ch: &Change,
    op: Operation,
    version: i64,
) -> Result<(), NodeError> {
    let deleted = op == Operation::Delete;
    // A DELETE without a version: the entity left this node's scopes (PROTOCOL §10), and the
    // node may no longer hold its data, so the tombstone keeps none.
    let data = if deleted && ch.version.is_none() {
        "{}".to_string()
    } else if deleted {
        get_entity_row(c, &ch.entity_type, &ch.entity_uuid)?
            .map(|e| e.data)
            .unwrap_or_else(|| "{}".to_string())
    } else {
        ch.data_text().to_string()
    };
    upsert_entity(
        c,
        &EntityRow {
            entity_type: ch.entity_type.clone(),
            entity_uuid: ch.entity_uuid.clone(),
            server_data: (!deleted).then(|| data.clone()),
            data,
            deleted,
            server_version: version,
            server_known: true,
            updated_at: ch.updated_at.clone(),
        },
    )
}
