//! Numbering pending outbox entries into packets, kept until the server acknowledges them.

use super::*;

impl Store {
    /// The packet to send next: the oldest stored packet the server has not acknowledged
    /// (resent byte for byte), or a newly numbered one from pending entries (maybe empty: that
    /// is how the node acknowledges). Returns the row and whether it was stored before.
    pub fn next_packet(&self, cfg: &ConfigRow) -> Result<(PacketRow, bool), NodeError> {
        self.write(|c| {
            let mut st = get_state(c)?;
            diesel::delete(
                packets_out::table.filter(packets_out::packet_no.le(st.server_acked_packet_no)),
            )
            .execute(c)?;
            let stored: Option<PacketRow> = packets_out::table
                .filter(packets_out::packet_no.gt(st.server_acked_packet_no))
                .order(packets_out::packet_no.asc())
                .select(PacketRow::as_select())
                .first(c)
                .optional()?;
            let (mut row, was_stored) = match stored {
                Some(r) => (r, true),
                None => {
                    let r = number_packet(c, cfg, &mut st)?;
                    save_state(c, &st)?;
                    (r, false)
                }
            };
            let now = starsync_protocol::now_ts();
            diesel::update(packets_out::table.find(row.packet_no))
                .set((
                    packets_out::send_count.eq(packets_out::send_count + 1),
                    packets_out::last_sent_at.eq(&now),
                ))
                .execute(c)?;
            row.send_count += 1;
            row.last_sent_at = Some(now);
            Ok((row, was_stored))
        })
    }

    /// For `export`: numbers packets for every pending entry (and an empty one when the
    /// acknowledgment has news), then hands every unacknowledged packet to `deliver` (which
    /// writes its file; the flag is true for a packet numbered by this call) inside the same
    /// transaction, so a failed delivery rolls the numbering back and the export changes
    /// nothing. The node's other writes wait meanwhile; writing a few files is short.
    pub fn export_packets(
        &self,
        cfg: &ConfigRow,
        deliver: &mut dyn FnMut(&PacketRow, bool) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        self.write(|c| {
            let mut st = get_state(c)?;
            let numbered_before = st.sent_packet_no;
            diesel::delete(
                packets_out::table.filter(packets_out::packet_no.le(st.server_acked_packet_no)),
            )
            .execute(c)?;
            while count_state(c, PENDING)? > 0 {
                number_packet(c, cfg, &mut st)?;
            }
            let newest_ack: Option<i64> = packets_out::table
                .filter(packets_out::packet_no.gt(st.server_acked_packet_no))
                .order(packets_out::packet_no.desc())
                .select(packets_out::ack_packet_no)
                .first(c)
                .optional()?;
            if newest_ack
                .map(|a| a < st.received_packet_no)
                .unwrap_or(true)
            {
                number_packet(c, cfg, &mut st)?;
            }
            st.last_export_at = Some(starsync_protocol::now_ts());
            save_state(c, &st)?;
            let numbers: Vec<i64> = packets_out::table
                .filter(packets_out::packet_no.gt(st.server_acked_packet_no))
                .order(packets_out::packet_no.asc())
                .select(packets_out::packet_no)
                .load(c)?;
            // One packet in memory at a time: a packet can be tens of MiB.
            for no in numbers {
                let row: PacketRow = packets_out::table
                    .find(no)
                    .select(PacketRow::as_select())
                    .first(c)?;
                deliver(&row, no > numbered_before)?;
            }
            Ok(())
        })
    }

    pub fn packet(&self, packet_no: i64) -> Result<Option<PacketRow>, NodeError> {
        self.read(|c| {
            Ok(packets_out::table
                .find(packet_no)
                .select(PacketRow::as_select())
                .first(c)
                .optional()?)
        })
    }
}

/// Numbers the next packet from up to `batch_size` pending entries (oldest first), marks them
/// in flight and stores its exact bytes. The caller saves `st`.
fn number_packet(
    c: &mut SqliteConnection,
    cfg: &ConfigRow,
    st: &mut StateRow,
) -> Result<PacketRow, NodeError> {
    let n = st.sent_packet_no + 1;
    let entries: Vec<OutboxRow> = outbox::table
        .filter(outbox::state.eq(PENDING))
        .order(outbox::id.asc())
        .limit(cfg.batch_size.max(1))
        .select(OutboxRow::as_select())
        .load(c)?;
    let total_pending = count_state(c, PENDING)?;
    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
    diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
        .set((outbox::state.eq(IN_FLIGHT), outbox::packet_no.eq(Some(n))))
        .execute(c)?;
    let mut changes = Vec::with_capacity(entries.len());
    for e in &entries {
        let data = match &e.data {
            Some(d) => Some(RawValue::from_string(d.clone()).map_err(|err| {
                NodeError::Protocol(format!("outbox entry {} holds invalid JSON: {err}", e.id))
            })?),
            None => None,
        };
        let fields = if e.operation == "UPDATE" {
            changed_fields_of(c, e)?
        } else {
            None
        };
        changes.push(Change {
            fields,
            change_id: e.change_id.clone(),
            entity_type: e.entity_type.clone(),
            entity_uuid: e.entity_uuid.clone(),
            operation: e.operation.clone(),
            base_version: Some(e.base_version.max(0) as u64),
            version: None,
            updated_at: e.updated_at.clone(),
            data,
        });
    }
    let now = starsync_protocol::now_ts();
    let packet = Packet {
        format: PACKET_FORMAT,
        schema_version: cfg.schema_version.clone(),
        sender_node_id: cfg.node_id.clone(),
        receiver_node_id: cfg.server_node_id.clone(),
        packet_no: n as u64,
        ack_packet_no: st.received_packet_no as u64,
        created_at: now.clone(),
        more: total_pending > entries.len() as i64,
        changes,
    };
    let row = PacketRow {
        packet_no: n,
        bytes: encode_packet(&packet),
        change_count: entries.len() as i64,
        ack_packet_no: st.received_packet_no,
        created_at: now,
        send_count: 0,
        last_sent_at: None,
    };
    diesel::insert_into(packets_out::table)
        .values(&row)
        .execute(c)?;
    st.sent_packet_no = n;
    Ok(row)
}

/// The `fields` of an UPDATE (PROTOCOL §5.1): the top-level fields whose values differ between
/// the server copy the edit was based on (`local_entities.server_data`) and the data sent —
/// changed, added or removed. Computed when the packet is numbered, so several local edits
/// coalesced into one outbox entry name every field any of them changed. `None` (the whole
/// document) when the node holds no server copy: then it cannot tell what it changed.
fn changed_fields_of(
    c: &mut SqliteConnection,
    e: &OutboxRow,
) -> Result<Option<Vec<String>>, NodeError> {
    let Some(data) = &e.data else {
        return Ok(None);
    };
    let base: Option<Option<String>> = local_entities::table
        .find((&e.entity_type, &e.entity_uuid))
        .select(local_entities::server_data)
        .first(c)
        .optional()?;
    Ok(base
        .flatten()
        .and_then(|base| starsync_protocol::fields::changed_fields(&base, data)))
}
