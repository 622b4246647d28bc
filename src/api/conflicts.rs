//! Conflict listing and admin resolution.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{admin, bearer, blocking, limit_param, parse_json, read_body};
use crate::engine::{Caller, Engine, EngineError};
use crate::store::history::HistoryFilter;
use starsync_protocol::api::{ConflictList, EntityView, ResolveRequest};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/conflicts").route(web::get().to(list)))
        .service(
            super::resource("/api/sync/conflicts/{id}/resolve").route(web::post().to(resolve)),
        );
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    entity_type: Option<String>,
    entity_uuid: Option<String>,
    node_id: Option<String>,
    unresolved: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// Conflict history rows, newest first. A node may list its own with `node_id` its own id.
#[utoipa::path(get, path = "/api/sync/conflicts", operation_id = "list_conflicts", tag = "conflicts",
    params(
        ("entity_type" = Option<String>, Query, description = "Only this entity type"),
        ("entity_uuid" = Option<String>, Query, description = "Only this entity"),
        ("node_id" = Option<String>, Query, description = "Only conflicts met by this node (required with a node token: its own id)"),
        ("unresolved" = Option<bool>, Query, description = "Only manual conflicts not resolved yet"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("before" = Option<String>, Query, description = "A conflict id: the page after it (older rows)"),
    ),
    responses((status = 200, description = "The conflicts", body = ConflictList)),
    security(("admin_token" = []), ("node_token" = [])))]
async fn list(
    engine: web::Data<Engine>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let unresolved_only = match q.unresolved.as_deref() {
        None | Some("") | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(EngineError::InvalidRequest(format!(
                "unresolved must be true or false, not {other:?}"
            ))
            .into())
        }
    };
    let limit = limit_param(q.limit.as_deref(), 100, 1000)?;
    let token = bearer(&req);
    let filter = HistoryFilter {
        entity_type: q.entity_type.filter(|s| !s.is_empty()),
        entity_uuid: q.entity_uuid.filter(|s| !s.is_empty()),
        node_id: q.node_id.filter(|s| !s.is_empty()),
        unresolved_only,
        before_seq: None,
        limit,
    };
    let before = q.before.filter(|s| !s.is_empty());
    let conflicts = blocking(&engine, move |e| {
        let viewer = match e.authenticate(token.as_deref())? {
            Caller::Node(me) => {
                if filter.node_id.as_deref() != Some(me.id.as_str()) {
                    return Err(EngineError::Forbidden(
                        "a node may list only its own conflicts: add ?node_id=<its own id>".into(),
                    ));
                }
                Some(me)
            }
            _ => None,
        };
        e.list_conflicts(filter, before.as_deref(), viewer.as_deref())
    })
    .await?;
    Ok(HttpResponse::Ok().json(ConflictList { conflicts }))
}

/// Resolves a manual conflict with new data, the stored losing version, or the server state.
#[utoipa::path(post, path = "/api/sync/conflicts/{id}/resolve", operation_id = "resolve_conflict", tag = "conflicts",
    params(("id" = String, Path, description = "The conflict (history row) id")),
    request_body = ResolveRequest,
    responses((status = 200, description = "The entity's new server version", body = EntityView)),
    security(("admin_token" = [])))]
async fn resolve(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let limit = engine.settings().server.max_body_bytes;
    let body = read_body(&req, payload, limit, ApiError::TooLarge).await?;
    let request: ResolveRequest = parse_json(&body)?;
    let id = path.into_inner();
    let entity = blocking(&engine, move |e| e.resolve_conflict(&id, request)).await?;
    Ok(HttpResponse::Ok().json(entity))
}
