//! `POST /api/sync/delta`: delta sync (PROTOCOL §11.2). Thin: authentication and the body
//! here, the rules in `engine::delta`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::budget::MemoryBudget;
use super::error::ApiResult;
use super::extract::{blocking, node_and_body};
use crate::engine::delta::DeltaRequest;
use crate::engine::Engine;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/delta").route(web::post().to(delta)));
}

/// The request (documentation; parsed as `engine::delta::DeltaRequest`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeltaBody {
    /// The `last_sync_at` of the last answer; null for a first sync.
    last_sync_at: Option<String>,
    /// At most 500: `{"entity_type", "entity_id", "action": "create"|"update"|"delete",
    /// "data", "version", "client_timestamp"}`; an update's `data` may hold only the fields it
    /// changes.
    changes: Vec<serde_json::Value>,
    /// Informational: shown in the node's status as its last device.
    device_id: Option<String>,
    /// All changes or none (default false: per-change errors beside applied changes).
    atomic: Option<bool>,
}

/// The answer (documentation; written from `engine::delta::DeltaResponse`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeltaAnswer {
    /// Changes since `last_sync_at` in commit order: `{"entity_type", "entity_id", "action",
    /// "data", "version", "client_timestamp"}`.
    server_changes: Vec<serde_json::Value>,
    /// `{"entity_type", "entity_id", "conflict_reason", "resolution", "client_version",
    /// "server_version", "server_data", "conflict_id"}`.
    conflicts: Vec<serde_json::Value>,
    /// Send it back as `last_sync_at` next time.
    last_sync_at: String,
    /// More server changes follow: sync again at once.
    has_more: bool,
    /// False when a change was rejected or lost its conflict outright.
    success: bool,
    applied_count: u64,
    error_count: u64,
    /// `{"index", "entity_type", "entity_id", "error", "reason", "message"}`.
    errors: Vec<serde_json::Value>,
}

/// Applies the client's changes and answers the changes since its last sync.
#[utoipa::path(post, path = "/api/sync/delta", operation_id = "delta_sync",
    tag = "delta", request_body = DeltaBody,
    description = "Delta sync (PROTOCOL §11.2): partial updates merged by field, optimistic locking by \
                   `version`, conflicts reported with the server's data; then the changes since \
                   `last_sync_at`. At most 500 changes (413 `too_many_changes`).",
    responses((status = 200, description = "Applied (see `success` and `errors`) and the server's changes", body = DeltaAnswer)),
    security(("node_token" = [])))]
async fn delta(
    engine: web::Data<Engine>,
    budget: web::Data<MemoryBudget>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (node, request): (_, DeltaRequest) = node_and_body(&engine, &budget, &req, payload).await?;
    let answer = blocking(&engine, move |e| e.delta_sync(&node, request)).await?;
    Ok(HttpResponse::Ok().json(answer))
}
