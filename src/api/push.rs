//! `POST /api/sync/push`: a local change-queue client's rows (PROTOCOL §11.4). Thin:
//! authentication and the body here, the rules in `engine::simple_push`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::budget::MemoryBudget;
use super::error::ApiResult;
use super::extract::{blocking, node_and_body};
use crate::engine::simple_push::PushRequest;
use crate::engine::Engine;
use starsync_protocol::api::{ChangeError, ConflictReport};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/push").route(web::post().to(push)));
}

/// The push's body (documentation; parsed as `engine::simple_push::PushRequest`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PushBody {
    /// At most 500 rows `{"id", "entity_id", "entity_type", "action": "CREATE"|"UPDATE"|"DELETE",
    /// "payload", "timestamp"}`; `timestamp` is ISO 8601 with an offset or `Z`, or epoch
    /// milliseconds; `id` is the idempotency key.
    changes: Vec<serde_json::Value>,
}

/// The push's answer: every row is applied, a duplicate, or rejected, so the client may mark
/// all of them synced.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PushAnswer {
    ok: bool,
    /// Rows applied now (those in `conflicts` included).
    applied: u64,
    /// Rows applied by an earlier push (same `id`), not applied again.
    duplicates: u64,
    /// Rows that met a newer version (history rows); `change_id` is the row's `id`.
    conflicts: Vec<ConflictReport>,
    /// Rows rejected by a rule; `change_id` is the row's `id`.
    errors: Vec<ChangeError>,
}

/// Applies a client's change-queue rows as the node's changes.
#[utoipa::path(post, path = "/api/sync/push", operation_id = "simple_push", tag = "push",
    request_body = PushBody,
    description = "Simple push (PROTOCOL §11.4): rows applied in order as the node's changes, last writer \
                   wins by `timestamp`, `id` as idempotency key. 413 `too_many_changes` over 500 rows.",
    responses((status = 200, description = "Every row applied, duplicate or rejected", body = PushAnswer)),
    security(("node_token" = [])))]
async fn push(
    engine: web::Data<Engine>,
    budget: web::Data<MemoryBudget>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (node, request): (_, PushRequest) = node_and_body(&engine, &budget, &req, payload).await?;
    let report = blocking(&engine, move |e| e.simple_push(&node, request)).await?;
    Ok(HttpResponse::Ok().json(PushAnswer {
        ok: true,
        applied: report.applied,
        duplicates: report.duplicates,
        conflicts: report.conflicts,
        errors: report.errors,
    }))
}
