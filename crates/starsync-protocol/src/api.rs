//! Request and response bodies of the HTTP API (PROTOCOL §6), shared by server and node client
//! so the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::data::EntityData;
use crate::vocab::{ErrorCode, RejectReason, Resolution, Strategy};

/// Every error body: a machine-readable code and a sentence for humans.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub message: String,
    /// Only for `packet_gap`: the packet number the server expects next.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expected_packet_no: Option<u64>,
    /// A lost conflict of a REST entity write (409 `conflict`, PROTOCOL §11.3): the server's
    /// entity as it stands.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entity: Option<Box<EntityView>>,
    /// The history row that keeps the losing version (with `entity`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub conflict_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    pub code: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The node's scopes (PROTOCOL §10; `*` = all). Default: none (global types only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The entity types the node synchronizes. Default: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

/// `PATCH /api/sync/nodes/{id}`: a new set of scopes and/or types (PROTOCOL §10). An absent
/// field is unchanged; `"types": null` means every type again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatchNodeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<String>>))]
    pub types: Option<Option<Vec<String>>>,
}

/// A field that is present (even as `null`) is `Some`; an absent one stays `None` (default).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    pub node_id: String,
    pub auth_token: String,
    pub server_node_id: String,
    pub server_version: String,
    pub schema_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExchangeRequest {
    pub packet_data: String,
}

/// A change the server rejected (not retried by the node).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeError {
    pub change_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    /// Always `invalid_change` today.
    pub error: ErrorCode,
    /// Finer machine-readable reason (`invalid_entity_type`, `immutable_type`, …).
    #[serde(default)]
    pub reason: RejectReason,
    pub message: String,
}

/// A conflict detected while applying a node's change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictReport {
    pub conflict_id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    /// The strategy that decided it.
    pub resolution: Strategy,
    pub server_version: i64,
    /// `<strategy>:<winner>` exactly as stored in the history row.
    pub conflict_resolution: Resolution,
    #[serde(default)]
    pub change_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExchangeResponse {
    pub success: bool,
    pub duplicate: bool,
    pub packet_data: String,
    pub processed_count: u64,
    pub error_count: u64,
    pub conflict_count: u64,
    pub errors: Vec<ChangeError>,
    pub conflicts: Vec<ConflictReport>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    pub node_id: String,
    pub node_code: String,
    pub node_name: String,
    pub active: bool,
    pub last_sync_in: Option<String>,
    pub last_sync_out: Option<String>,
    pub pending_changes: i64,
    pub sent_packet_no: i64,
    pub received_packet_no: i64,
    pub acked_packet_no: i64,
    pub unresolved_conflicts: i64,
    /// The node's scopes (PROTOCOL §10): `["*"]` = all; empty = global types only. Absent on a
    /// hub without `[scopes]` (every node sees everything there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The entity types it synchronizes; absent = every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// The `device_id` of the node's last delta sync (PROTOCOL §11.2), informational; absent
    /// until one named a device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_device: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingCount {
    pub code: String,
    pub pending_changes: i64,
    pub last_sync_in: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerStatus {
    pub total_nodes: i64,
    pub server_node_id: String,
    pub entities: i64,
    pub unresolved_conflicts: i64,
    pub pending_counts: std::collections::BTreeMap<String, PendingCount>,
    pub timestamp: String,
    /// Node packets the hub has applied, ever (the sum of every node's `received_packet_no`;
    /// every exchange carries one, duplicates excluded). Two readings give exchanges per second
    /// across every server process on the database, which an in-process counter would not.
    #[serde(default)]
    pub packets_received: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub node_id: String,
    pub code: String,
    pub name: String,
    pub description: Option<String>,
    pub active: bool,
    pub created_at: String,
    pub last_sync_in: Option<String>,
    pub last_sync_out: Option<String>,
    pub pending_changes: i64,
    /// The node's scopes (PROTOCOL §10): `["*"]` = all; empty = global types only. Absent on a
    /// hub without `[scopes]` (every node sees everything there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The entity types it synchronizes; absent = every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// The `device_id` of the node's last delta sync (PROTOCOL §11.2); absent until one named
    /// a device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_device: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeList {
    pub nodes: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub node_id: String,
    pub auth_token: String,
}

/// One `object_version_history` row as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictRow {
    pub id: String,
    pub entity_type: String,
    pub entity_uuid: String,
    pub source_node_id: Option<String>,
    /// The node whose change met the conflict.
    pub node_id: Option<String>,
    pub arrival_time: String,
    /// That version's data, exactly as its author wrote it.
    pub serialized_data: EntityData,
    pub conflict_resolution: Resolution,
    pub server_version: i64,
    /// The change (by its author's `change_id`) that met the conflict.
    #[serde(default)]
    pub change_id: Option<String>,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConflictList {
    pub conflicts: Vec<ConflictRow>,
}

/// Body of `POST /api/sync/conflicts/{id}/resolve`: exactly one of `data` or `use`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResolveRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<EntityData>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// An entity as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntityView {
    pub entity_type: String,
    pub entity_uuid: String,
    pub version: i64,
    /// The state exactly as written (numbers byte for byte); `null` for a tombstone.
    pub data: Option<EntityData>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub updated_at: String,
}

/// Body of the admin entity write `PUT /api/sync/entities/{type}/{uuid}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntityWrite {
    /// Kept as the text the admin sent, so numbers reach the nodes exactly as written.
    pub data: EntityData,
}

/// One page of `GET /api/sync/entities?entity_type=…&after=…&limit=…`, ordered by entity id.
/// Tombstones are included (with `deleted: true`): they are part of what nodes receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntityPage {
    pub entities: Vec<EntityView>,
    /// The `after` that fetches the next page; `null` on the last page.
    pub next_after: Option<String>,
}

/// `GET /api/sync/entity-types`: every type the hub stores (tombstones count), sorted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntityTypeList {
    pub entity_types: Vec<String>,
}
