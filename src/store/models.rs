//! Row types, one per table.

use diesel::prelude::*;

use super::schema::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = server_state)]
pub struct ServerState {
    pub id: i32,
    pub server_node_id: String,
    pub code: String,
    pub last_seq: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_nodes)]
pub struct Node {
    pub id: String,
    pub code: String,
    pub name: String,
    pub description: Option<String>,
    pub token_hash: String,
    pub active: bool,
    pub created_at: String,
    pub last_sync_in: Option<String>,
    pub last_sync_out: Option<String>,
    pub received_packet_no: i64,
    pub sent_packet_no: i64,
    pub acked_packet_no: i64,
    pub acked_seq: i64,
    pub registered_seq: i64,
    /// The entity types the node receives and may write (a JSON array); `None` = every type.
    pub types: Option<String>,
    /// Delta sync's last `device_id` (PROTOCOL §11.2), informational.
    pub last_device: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = entities)]
#[diesel(treat_none_as_null = true)]
// None is NULL, never DEFAULT: this lets diesel write a batch of new entities as one multi-row
// INSERT on SQLite (with possible DEFAULTs it inserts row by row inside a savepoint).
#[diesel(treat_none_as_default_value = false)]
pub struct Entity {
    pub entity_type: String,
    pub entity_uuid: String,
    pub data: String,
    pub version: i64,
    pub updated_at: String,
    pub is_deleted: bool,
    pub author_node_id: Option<String>,
    pub holder_node_id: Option<String>,
    pub seq: i64,
    pub created_seq: i64,
    pub change_id: Option<String>,
    pub applied_at: String,
    /// Who last changed each top-level field of `data` (PROTOCOL §5.1), as
    /// `engine::fields::FieldVersions` writes it; NULL: every field at `version` by
    /// `author_node_id`.
    pub field_versions: Option<String>,
    /// The entity's scope (PROTOCOL §10), computed from its state at every write: `None` = no
    /// scope value, `Some("")` = a global type ([`crate::store::scopes::GLOBAL`]).
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_changes)]
pub struct QueueRow {
    pub node_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub seq: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_packets_out)]
pub struct OutPacket {
    pub node_id: String,
    pub packet_no: i64,
    pub high_seq: i64,
    pub change_count: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sync_packets_in)]
pub struct InPacketReport {
    pub node_id: String,
    pub packet_no: i64,
    pub report: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = object_version_history)]
pub struct HistoryRow {
    pub id: String,
    pub seq: i64,
    pub entity_uuid: String,
    pub entity_type: String,
    pub source_node_id: Option<String>,
    pub node_id: Option<String>,
    pub change_id: Option<String>,
    pub arrival_time: String,
    pub serialized_data: String,
    pub conflict_resolution: String,
    pub server_version: i64,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = node_scopes)]
pub struct NodeScope {
    pub node_id: String,
    pub scope: String,
    pub acked_seq: i64,
    pub since_seq: i64,
    pub since_packet: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = node_scope_losses)]
pub struct ScopeLoss {
    pub node_id: String,
    pub scope: String,
    pub cursor_seq: i64,
    pub loss_seq: i64,
    pub acked_at_loss: i64,
    pub since_packet: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = scope_exits)]
pub struct ScopeExit {
    pub scope: String,
    pub seq: i64,
    pub entity_type: String,
    pub entity_uuid: String,
    pub created_at: String,
}
