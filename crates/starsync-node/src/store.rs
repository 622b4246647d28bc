//! The node's local SQLite database: configuration, local entities, the outbox, stored packets,
//! counters and reported conflicts.
//!
//! One connection behind a mutex: a desktop node has one writer at a time, and every operation
//! that must be atomic (a local write and its outbox entry; an acknowledgment and the server
//! changes after it) runs in one `BEGIN IMMEDIATE` transaction, so a crash or a kill between two
//! statements never leaves half a change. No lock is held during network calls.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use parking_lot::Mutex;
use serde_json::value::RawValue;

use super::events::{LocalConflict, LocalDecision};
use super::schema::{conflicts, local_entities, node_config, node_state, outbox, packets_out};
use super::types::{ConflictRecord, Entity, FailedChange, QueuedChange, Status, SyncState};
use super::NodeError;
use starsync_protocol::api::{ChangeError, ConflictReport};
use starsync_protocol::{self, encode_packet, Change, Operation, Packet, PACKET_FORMAT};
use starsync_protocol::{OutboxState, RejectReason};

/// The node database's own migrations (not the server's).
pub const NODE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/node");

// Outbox states as stored (the protocol's vocabulary, PROTOCOL §8).
const PENDING: &str = OutboxState::Pending.as_str();
const IN_FLIGHT: &str = OutboxState::InFlight.as_str();
const FAILED: &str = OutboxState::Failed.as_str();

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = node_config)]
pub struct ConfigRow {
    pub id: i64,
    pub server_url: String,
    pub node_id: String,
    pub auth_token: String,
    pub server_node_id: String,
    pub server_code: String,
    pub code: String,
    pub name: String,
    pub schema_version: String,
    pub packet_timeout: i64,
    pub max_retries: i64,
    pub batch_size: i64,
    pub max_packet_bytes: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = node_state)]
#[diesel(treat_none_as_null = true)]
pub struct StateRow {
    pub id: i64,
    pub sent_packet_no: i64,
    pub server_acked_packet_no: i64,
    pub received_packet_no: i64,
    pub last_attempt_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_export_at: Option<String>,
    pub last_import_at: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = local_entities)]
#[diesel(treat_none_as_null = true)]
pub struct EntityRow {
    pub entity_type: String,
    pub entity_uuid: String,
    pub data: String,
    pub deleted: bool,
    pub server_version: i64,
    pub server_known: bool,
    pub server_data: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub change_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub operation: String,
    pub base_version: i64,
    pub data: Option<String>,
    pub updated_at: String,
    pub created_at: String,
    pub state: String,
    pub packet_no: Option<i64>,
    pub error: Option<String>,
    pub error_reason: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutbox<'a> {
    change_id: &'a str,
    entity_type: &'a str,
    entity_uuid: &'a str,
    operation: &'a str,
    base_version: i64,
    data: Option<&'a str>,
    updated_at: &'a str,
    created_at: &'a str,
    state: &'a str,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = packets_out)]
pub struct PacketRow {
    pub packet_no: i64,
    pub bytes: Vec<u8>,
    pub change_count: i64,
    pub ack_packet_no: i64,
    pub created_at: String,
    pub send_count: i64,
    pub last_sent_at: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = conflicts)]
pub struct ConflictRow {
    pub conflict_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub change_id: String,
    pub resolution: String,
    pub conflict_resolution: String,
    pub server_version: i64,
    pub local_data: Option<String>,
    pub reported_at: String,
}

/// A local write.
pub enum LocalOp {
    /// Upsert with this JSON object (as text).
    Put(String),
    Delete,
    /// A raw change (`queue`): any operation and data, sent as given. The local entity is
    /// changed only when `apply_locally` (the change is well-formed).
    Raw {
        operation: String,
        data: Option<String>,
        apply_locally: bool,
    },
}

/// The server's answer metadata for the packet it just applied.
pub struct AnswerMeta<'a> {
    pub errors: &'a [ChangeError],
    pub conflicts: &'a [ConflictReport],
}

/// What handling one server packet did.
#[derive(Debug, Default)]
pub struct AnswerOutcome {
    pub failed: Vec<FailedChange>,
    pub conflicts: Vec<ConflictRecord>,
    pub received: u64,
    pub kept_local: u64,
    /// False when the packet was not newer than the last one applied (ignored).
    pub applied_packet: bool,
    pub entity_types: BTreeSet<String>,
    pub local_conflicts: Vec<(LocalConflict, LocalDecision)>,
}

pub struct Store {
    conn: Mutex<SqliteConnection>,
    pub path: PathBuf,
}

impl Store {
    /// Opens (creating when missing) the database file and runs its migrations.
    pub fn open(path: &Path) -> Result<Store, NodeError> {
        let open_err = |message: String| NodeError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| open_err(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut conn = SqliteConnection::establish(&path.display().to_string())
            .map_err(|e| open_err(e.to_string()))?;
        // Same choices as the server's store: WAL so readers (a UI, the CLI) never block the
        // syncing writer; NORMAL durability; a long busy timeout for a CLI and a daemon sharing
        // the file.
        conn.batch_execute(
            "PRAGMA busy_timeout = 15000;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 10000;",
        )
        .map_err(|e| open_err(e.to_string()))?;
        conn.run_pending_migrations(NODE_MIGRATIONS)
            .map_err(|e| open_err(format!("migration failed: {e}")))?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut c = self.conn.lock();
        f(&mut c)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut c = self.conn.lock();
        c.immediate_transaction(f)
    }

    // ---- configuration and counters ----

    pub fn config(&self) -> Result<Option<ConfigRow>, NodeError> {
        self.read(|c| {
            Ok(node_config::table
                .find(1)
                .select(ConfigRow::as_select())
                .first(c)
                .optional()?)
        })
    }

    /// Stores the configuration and the starting counters of a new (or attached) node.
    pub fn initialize(&self, cfg: &ConfigRow, sent: i64, received: i64) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::delete(node_config::table).execute(c)?;
            diesel::delete(node_state::table).execute(c)?;
            diesel::insert_into(node_config::table)
                .values(cfg)
                .execute(c)?;
            diesel::insert_into(node_state::table)
                .values(&StateRow {
                    id: 1,
                    sent_packet_no: sent,
                    server_acked_packet_no: sent,
                    received_packet_no: received,
                    last_attempt_at: None,
                    last_success_at: None,
                    last_error: None,
                    last_error_at: None,
                    last_export_at: None,
                    last_import_at: None,
                })
                .execute(c)?;
            Ok(())
        })
    }

    pub fn save_config(&self, cfg: &ConfigRow) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::update(node_config::table.find(1))
                .set(cfg)
                .execute(c)?;
            Ok(())
        })
    }

    pub fn state(&self) -> Result<StateRow, NodeError> {
        self.read(get_state)
    }

    pub fn record_attempt(&self) -> Result<(), NodeError> {
        self.write(|c| {
            diesel::update(node_state::table.find(1))
                .set(node_state::last_attempt_at.eq(starsync_protocol::now_ts()))
                .execute(c)?;
            Ok(())
        })
    }

    /// Records the outcome of a sync: success clears the last error.
    pub fn record_outcome(&self, error: Option<&str>) -> Result<(), NodeError> {
        let now = starsync_protocol::now_ts();
        self.write(|c| {
            let q = diesel::update(node_state::table.find(1));
            match error {
                None => q
                    .set((
                        node_state::last_success_at.eq(&now),
                        node_state::last_error.eq(None::<String>),
                        node_state::last_error_at.eq(None::<String>),
                    ))
                    .execute(c)?,
                Some(e) => q
                    .set((
                        node_state::last_error.eq(e),
                        node_state::last_error_at.eq(&now),
                    ))
                    .execute(c)?,
            };
            Ok(())
        })
    }

    // ---- local entities ----

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

    // ---- packets out ----

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
    /// acknowledgment has news), and returns the numbers of all unacknowledged packets.
    pub fn prepare_export(&self, cfg: &ConfigRow) -> Result<Vec<i64>, NodeError> {
        self.write(|c| {
            let mut st = get_state(c)?;
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
            Ok(packets_out::table
                .filter(packets_out::packet_no.gt(st.server_acked_packet_no))
                .order(packets_out::packet_no.asc())
                .select(packets_out::packet_no)
                .load(c)?)
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

    // ---- answers ----

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

    // ---- status, failed, conflicts ----

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

// ---- helpers inside a transaction ----

fn get_state(c: &mut SqliteConnection) -> Result<StateRow, NodeError> {
    node_state::table
        .find(1)
        .select(StateRow::as_select())
        .first(c)
        .optional()?
        .ok_or_else(|| NodeError::Protocol("the node database has no state row".into()))
}

fn save_state(c: &mut SqliteConnection, st: &StateRow) -> Result<(), NodeError> {
    diesel::update(node_state::table.find(1))
        .set(st)
        .execute(c)?;
    Ok(())
}

fn count_state(c: &mut SqliteConnection, state: &str) -> Result<i64, NodeError> {
    Ok(outbox::table
        .filter(outbox::state.eq(state))
        .count()
        .get_result(c)?)
}

fn get_entity_row(
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

fn upsert_entity(c: &mut SqliteConnection, row: &EntityRow) -> Result<(), NodeError> {
    diesel::insert_into(local_entities::table)
        .values(row)
        .on_conflict((local_entities::entity_type, local_entities::entity_uuid))
        .do_update()
        .set(row)
        .execute(c)?;
    Ok(())
}

fn entry_in_state(
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

fn entry_by_change_id(
    c: &mut SqliteConnection,
    change_id: &str,
) -> Result<Option<OutboxRow>, NodeError> {
    Ok(outbox::table
        .filter(outbox::change_id.eq(change_id))
        .select(OutboxRow::as_select())
        .first(c)
        .optional()?)
}

fn failed_by_key(c: &mut SqliteConnection, key: &str) -> Result<OutboxRow, NodeError> {
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
        changes.push(Change {
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
    let data = if deleted {
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

fn sync_state<'a>(states: impl Iterator<Item = &'a str>) -> SyncState {
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

fn to_entity(r: EntityRow, sync_state: SyncState) -> Entity {
    Entity {
        data: serde_json::from_str(&r.data).unwrap_or(serde_json::Value::Null),
        entity_type: r.entity_type,
        entity_uuid: r.entity_uuid,
        deleted: r.deleted,
        server_version: r.server_version,
        sync_state,
        updated_at: r.updated_at,
    }
}

fn to_failed(r: OutboxRow) -> FailedChange {
    FailedChange {
        id: r.id,
        change_id: r.change_id,
        entity_type: r.entity_type,
        entity_uuid: r.entity_uuid,
        operation: r.operation,
        base_version: r.base_version,
        data: r.data.and_then(|d| serde_json::from_str(&d).ok()),
        error: r.error.unwrap_or_default(),
        reason: r.error_reason.unwrap_or_default(),
        packet_no: r.packet_no,
        updated_at: r.updated_at,
    }
}

fn to_conflict(r: ConflictRow) -> Result<ConflictRecord, NodeError> {
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
        local_data: r.local_data.and_then(|d| serde_json::from_str(&d).ok()),
        reported_at: r.reported_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store, ConfigRow) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("node.db")).unwrap();
        let cfg = ConfigRow {
            id: 1,
            server_url: "http://127.0.0.1:1".into(),
            node_id: "00000000-0000-4000-8000-000000000001".into(),
            auth_token: "t".into(),
            server_node_id: "00000000-0000-4000-8000-000000000002".into(),
            server_code: "server".into(),
            code: "N".into(),
            name: "N".into(),
            schema_version: "1.0.0".into(),
            packet_timeout: 30,
            max_retries: 3,
            batch_size: 2,
            max_packet_bytes: 1 << 20,
            created_at: starsync_protocol::now_ts(),
        };
        s.initialize(&cfg, 0, 0).unwrap();
        (dir, s, cfg)
    }

    const U: &str = "00000000-0000-4000-8000-0000000000aa";

    fn put(s: &Store, v: i64) -> QueuedChange {
        s.local_write("T", U, LocalOp::Put(format!("{{\"v\":{v}}}")))
            .unwrap()
            .unwrap()
    }

    /// A server packet with one change of `U` at `version`, acknowledging `ack`.
    fn server_packet(cfg: &ConfigRow, no: u64, ack: u64, version: u64, v: i64) -> Packet {
        Packet {
            format: PACKET_FORMAT,
            schema_version: "1.0.0".into(),
            sender_node_id: cfg.server_node_id.clone(),
            receiver_node_id: cfg.node_id.clone(),
            packet_no: no,
            ack_packet_no: ack,
            created_at: starsync_protocol::now_ts(),
            more: false,
            changes: vec![Change {
                change_id: uuid::Uuid::new_v4().to_string(),
                entity_type: "T".into(),
                entity_uuid: U.into(),
                operation: "UPDATE".into(),
                base_version: None,
                version: Some(version),
                updated_at: starsync_protocol::now_ts(),
                data: Some(RawValue::from_string(format!("{{\"v\":{v}}}")).unwrap()),
            }],
        }
    }

    fn apply(s: &Store, p: &Packet) -> AnswerOutcome {
        s.apply_server_packet(p, None, &HashMap::new(), &mut |_, _| {})
            .unwrap()
    }

    #[test]
    fn one_pending_entry_per_entity_keeps_the_first_base() {
        let (_d, s, cfg) = store();
        // The server's version 3 arrives first.
        apply(&s, &server_packet(&cfg, 1, 0, 3, 0));
        let a = put(&s, 1);
        assert_eq!((a.operation.as_str(), a.base_version), ("UPDATE", 3));
        // The server moves on, but the pending edit is not overwritten…
        let out = apply(&s, &server_packet(&cfg, 2, 0, 4, 99));
        assert_eq!((out.received, out.kept_local), (0, 1));
        // …and a second edit replaces the pending entry, keeping base 3.
        let b = put(&s, 2);
        assert!(b.replaced_pending);
        assert_eq!(b.base_version, 3);
        assert_eq!(s.outbox(None).unwrap().len(), 1);
        assert_eq!(s.get_entity("T", U).unwrap().unwrap().data["v"], 2);
    }

    #[test]
    fn delete_then_put_collapses_and_new_entities_insert() {
        let (_d, s, _cfg) = store();
        let a = put(&s, 1);
        assert_eq!((a.operation.as_str(), a.base_version), ("INSERT", 0));
        let d = s.local_write("T", U, LocalOp::Delete).unwrap().unwrap();
        assert_eq!(d.operation, "DELETE");
        let again = put(&s, 2);
        assert_eq!(
            (again.operation.as_str(), again.base_version),
            ("INSERT", 0)
        );
        let rows = s.outbox(None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].data.as_deref(), Some("{\"v\":2}"));
    }

    #[test]
    fn packets_are_immutable_and_writes_in_flight_go_to_a_later_packet() {
        let (_d, s, cfg) = store();
        put(&s, 1);
        let (p1, stored) = s.next_packet(&cfg).unwrap();
        assert!(!stored);
        assert_eq!((p1.packet_no, p1.change_count), (1, 1));
        // A write while packet 1 is in flight: a new pending entry, packet 1 unchanged.
        put(&s, 2);
        let states: Vec<String> = s
            .outbox(None)
            .unwrap()
            .into_iter()
            .map(|r| r.state)
            .collect();
        assert_eq!(states, vec![IN_FLIGHT, PENDING]);
        let (again, stored) = s.next_packet(&cfg).unwrap();
        assert!(stored, "unacknowledged packet 1 is resent");
        assert_eq!(again.bytes, p1.bytes, "byte for byte");
        // The acknowledgment drops packet 1 and its entry; the next packet carries the new edit.
        let mut p = server_packet(&cfg, 1, 1, 1, 0);
        p.changes.clear();
        apply(&s, &p);
        let rows = s.outbox(None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, PENDING);
        let (p2, _) = s.next_packet(&cfg).unwrap();
        assert_eq!(p2.packet_no, 2);
        let decoded = starsync_protocol::decode_packet_bytes(&p2.bytes, 1 << 20).unwrap();
        assert_eq!(decoded.ack_packet_no, 1);
        assert_eq!(decoded.changes[0].data_text(), "{\"v\":2}");
    }

    #[test]
    fn acknowledgment_is_processed_before_the_changes() {
        let (_d, s, cfg) = store();
        put(&s, 1);
        s.next_packet(&cfg).unwrap();
        // The answer acknowledges packet 1 and carries a newer server state: the entry is gone
        // first, so the change applies.
        let out = apply(&s, &server_packet(&cfg, 1, 1, 5, 7));
        assert_eq!((out.received, out.kept_local), (1, 0));
        let e = s.get_entity("T", U).unwrap().unwrap();
        assert_eq!((e.data["v"].as_i64(), e.server_version), (Some(7), 5));
        // An older server packet is ignored (its acknowledgment still counts).
        let out = apply(&s, &server_packet(&cfg, 1, 1, 9, 9));
        assert!(!out.applied_packet);
    }

    #[test]
    fn gap_acknowledges_what_came_before_the_expected_packet() {
        let (_d, s, cfg) = store();
        put(&s, 1);
        s.prepare_export(&cfg).unwrap();
        s.local_write(
            "T",
            "00000000-0000-4000-8000-0000000000bb",
            LocalOp::Put("{}".into()),
        )
        .unwrap();
        let numbers = s.prepare_export(&cfg).unwrap();
        assert_eq!(numbers, vec![1, 2]);
        s.handle_gap(2).unwrap();
        let (next, stored) = s.next_packet(&cfg).unwrap();
        assert!(stored);
        assert_eq!(next.packet_no, 2);
        assert!(
            s.handle_gap(1).is_err(),
            "a server that forgot acknowledged packets"
        );
    }
}
