//! Plain data the node API hands out (all serializable, for `--json` and for UIs).

use serde::Serialize;
use starsync_protocol::{EntityData, Resolution, Strategy, Winner};

/// Where a local entity stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// No local change waiting: the local state is the last one exchanged with the server.
    Synced,
    /// A local change waits in the outbox.
    Pending,
    /// A local change is numbered into a packet the server has not acknowledged yet.
    InFlight,
    /// The server rejected the last local change (see `failed`).
    Failed,
}

/// One local entity.
#[derive(Debug, Clone, Serialize)]
pub struct Entity {
    pub entity_type: String,
    pub entity_uuid: String,
    /// The local state (for a deleted entity: the last state it had), as the JSON text its
    /// author wrote: numbers byte for byte. `data.parse::<T>()` reads it into a type of yours
    /// (or a `serde_json::Value`).
    pub data: EntityData,
    pub deleted: bool,
    /// The last server version this node received (0: none; the node's own accepted changes
    /// do not come back, so this can lag behind the server's counter).
    pub server_version: i64,
    pub sync_state: SyncState,
    pub updated_at: String,
}

/// A change queued in the outbox by a local write.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedChange {
    pub change_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub operation: String,
    pub base_version: i64,
    /// True when the write replaced a change that was already pending for the entity.
    pub replaced_pending: bool,
}

/// What one `sync()` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Exchanges (one packet each way) completed.
    pub exchanges: u64,
    /// Packets this node delivered (first sends and byte-identical resends).
    pub packets_sent: u64,
    /// Changes in the packets delivered.
    pub sent: u64,
    /// Packets the server had already applied (their first answer was lost).
    pub duplicates: u64,
    /// Server changes applied to local entities.
    pub received: u64,
    /// Server changes not applied because a local change of the entity is on its way.
    pub kept_local: u64,
    /// Changes the server rejected (now `failed`).
    pub errors: Vec<FailedChange>,
    /// Conflicts the server reported for this node's changes.
    pub conflicts: Vec<ConflictRecord>,
    /// Network retries within this sync.
    pub retries: u64,
    /// `packet_gap` answers recovered from by resending stored packets.
    pub gaps_recovered: u64,
    /// The sync stopped early because a stop was requested; nothing is lost.
    pub cancelled: bool,
}

/// A conflict the server reported for one of this node's changes.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictRecord {
    pub conflict_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub change_id: String,
    /// The strategy that decided it.
    pub resolution: Strategy,
    /// `<strategy>:<winner>` as in the server's history row.
    pub conflict_resolution: Resolution,
    pub server_version: i64,
    /// What this node had sent (None for a delete).
    pub local_data: Option<EntityData>,
    pub reported_at: String,
}

impl ConflictRecord {
    /// True when this node's change lost (the server kept or restored another state).
    pub fn node_lost(&self) -> bool {
        self.conflict_resolution.winner != Winner::Client
    }
}

/// A change the server rejected, kept until the user retries or drops it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedChange {
    /// Outbox id (what `failed retry`/`failed drop` take).
    pub id: i64,
    pub change_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub operation: String,
    pub base_version: i64,
    pub data: Option<EntityData>,
    pub error: String,
    pub reason: String,
    pub packet_no: Option<i64>,
    pub updated_at: String,
}

/// The node's configuration as shown to users (never the token).
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub data_dir: String,
    pub server_url: String,
    pub node_id: String,
    pub code: String,
    pub name: String,
    pub server_node_id: String,
    pub server_code: String,
    pub schema_version: String,
    pub packet_timeout: i64,
    pub max_retries: i64,
    pub batch_size: i64,
    pub max_packet_bytes: i64,
    pub created_at: String,
    /// The private CA trusted instead of the public roots (None: the public roots).
    pub ca_cert: Option<String>,
}

/// Outbox and packet counters, last sync times and error.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Status {
    pub pending: i64,
    pub in_flight: i64,
    pub failed: i64,
    /// Numbered packets kept until the server acknowledges them.
    pub stored_packets: i64,
    pub sent_packet_no: i64,
    pub server_acked_packet_no: i64,
    pub received_packet_no: i64,
    pub conflicts: i64,
    pub last_attempt_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_export_at: Option<String>,
    pub last_import_at: Option<String>,
}

/// One packet file written by `export`.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    pub file: String,
    pub packet_no: i64,
    pub changes: i64,
    pub bytes: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub files: Vec<ExportedFile>,
}

/// One server packet file applied by `import`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedFile {
    pub file: String,
    pub packet_no: u64,
    /// Already applied before (an older or repeated file): only its acknowledgment counted.
    pub skipped: bool,
    pub received: u64,
    pub kept_local: u64,
    pub acked_packet_no: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub files: Vec<ImportedFile>,
    pub received: u64,
    pub kept_local: u64,
}

/// Progress of an import, for a progress bar.
#[derive(Debug, Clone)]
pub enum ImportProgress {
    /// Starting file `index` (1-based) of `total`.
    File {
        index: usize,
        total: usize,
        path: String,
        bytes: u64,
    },
    /// `done` of `total` changes of the current file applied.
    Changes { done: usize, total: usize },
}
