//! The rows of the node database, as diesel reads and writes them.

use super::*;

// Outbox states as stored (the protocol's vocabulary, PROTOCOL §8).
pub(super) const PENDING: &str = OutboxState::Pending.as_str();
pub(super) const IN_FLIGHT: &str = OutboxState::InFlight.as_str();
pub(super) const FAILED: &str = OutboxState::Failed.as_str();

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = node_config)]
#[diesel(treat_none_as_null = true)]
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
    /// Absolute path of the PEM file of the private CA trusted instead of the public roots.
    pub ca_cert: Option<String>,
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
pub(super) struct NewOutbox<'a> {
    pub(super) change_id: &'a str,
    pub(super) entity_type: &'a str,
    pub(super) entity_uuid: &'a str,
    pub(super) operation: &'a str,
    pub(super) base_version: i64,
    pub(super) data: Option<&'a str>,
    pub(super) updated_at: &'a str,
    pub(super) created_at: &'a str,
    pub(super) state: &'a str,
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
