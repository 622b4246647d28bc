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

mod config;
mod inbound;
mod local;
mod packets;
mod rows;
mod status;

use config::*;
use local::*;
pub use rows::*;
use status::*;

/// The node database's own migrations (not the server's).
pub const NODE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/node");

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

    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut c = self.conn.lock();
        f(&mut c)
    }

    pub(super) fn write<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut c = self.conn.lock();
        c.immediate_transaction(f)
    }
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
            ca_cert: None,
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
                fields: None,
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
        assert_eq!(
            s.get_entity("T", U).unwrap().unwrap().data.to_value()["v"],
            2
        );
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
        assert_eq!(
            (e.data.to_value()["v"].as_i64(), e.server_version),
            (Some(7), 5)
        );
        // An older server packet is ignored (its acknowledgment still counts).
        let out = apply(&s, &server_packet(&cfg, 1, 1, 9, 9));
        assert!(!out.applied_packet);
    }

    #[test]
    fn gap_acknowledges_what_came_before_the_expected_packet() {
        let (_d, s, cfg) = store();
        put(&s, 1);
        s.export_packets(&cfg, &mut |_, _| Ok(())).unwrap();
        s.local_write(
            "T",
            "00000000-0000-4000-8000-0000000000bb",
            LocalOp::Put("{}".into()),
        )
        .unwrap();
        let mut numbers = Vec::new();
        s.export_packets(&cfg, &mut |p, new| {
            numbers.push((p.packet_no, new));
            Ok(())
        })
        .unwrap();
        assert_eq!(numbers, vec![(1, false), (2, true)]);
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
