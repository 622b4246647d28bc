//! Admin access to entities: list them by type (the dashboard's browser), read, write and delete
//! as the hub (server-authored versions that reach every node; the only way to change an
//! `immutable` type).

use actix_web::{web, HttpRequest, HttpResponse};

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{admin, blocking, limit_param, parse_json, read_body};
use crate::engine::admin::entities::MAX_PAGE;
use crate::engine::{Engine, EngineError};
use starsync_protocol::api::{EntityPage, EntityTypeList, EntityView, EntityWrite};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/entity-types").route(web::get().to(types)))
        .service(super::resource("/api/sync/entities").route(web::get().to(list)));
    cfg.service(
        super::resource("/api/sync/entities/{entity_type}/{entity_uuid}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::delete().to(delete)),
    );
}

/// `GET /api/sync/entities?entity_type=&after=&limit=`. Strings, so that a bad value is the
/// protocol's 422 with a sentence rather than serde's rejection.
#[derive(Debug, Deserialize)]
struct ListQuery {
    entity_type: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// One page of the entities of a type, by id (tombstones included).
#[utoipa::path(get, path = "/api/sync/entities", operation_id = "list_entities", tag = "entities",
    params(
        ("entity_type" = String, Query, description = "The entity type"),
        ("after" = Option<String>, Query, description = "The previous page's `next_after`"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
    ),
    responses((status = 200, description = "One page", body = EntityPage)),
    security(("admin_token" = [])))]
async fn list(
    engine: web::Data<Engine>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let q = query.into_inner();
    let entity_type = q.entity_type.filter(|s| !s.is_empty()).ok_or_else(|| {
        EngineError::InvalidRequest(
            "entity_type is required (GET /api/sync/entity-types lists them)".into(),
        )
    })?;
    let limit = limit_param(q.limit.as_deref(), 100, MAX_PAGE)?;
    let after = q.after.filter(|s| !s.is_empty());
    let page = blocking(&engine, move |e| {
        e.list_entities(&entity_type, after.as_deref(), limit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Every entity type the hub stores, sorted.
#[utoipa::path(get, path = "/api/sync/entity-types", operation_id = "list_entity_types", tag = "entities",
    responses((status = 200, description = "The entity types", body = EntityTypeList)),
    security(("admin_token" = [])))]
async fn types(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let list = blocking(&engine, |e| e.list_entity_types()).await?;
    Ok(HttpResponse::Ok().json(list))
}

/// One entity (a tombstone too, with `deleted: true`).
#[utoipa::path(get, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "get_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")), responses((status = 200, description = "The entity", body = EntityView)),
    security(("admin_token" = [])))]
async fn get(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let (t, u) = path.into_inner();
    let view = blocking(&engine, move |e| e.get_entity(&t, &u)).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Writes a hub-authored version, sent to every node.
#[utoipa::path(put, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "put_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")), request_body = EntityWrite,
    responses((status = 200, description = "The new version", body = EntityView)),
    security(("admin_token" = [])))]
async fn put(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let limit = engine.settings().server.max_body_bytes;
    let body = read_body(&req, payload, limit, ApiError::TooLarge).await?;
    let write: EntityWrite = parse_json(&body)?;
    let (t, u) = path.into_inner();
    let view = blocking(&engine, move |e| e.put_entity(&t, &u, Some(write.data))).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Deletes an entity (a tombstone sent to every node; deleting a tombstone changes nothing).
#[utoipa::path(delete, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "delete_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")), responses((status = 200, description = "The tombstone", body = EntityView)),
    security(("admin_token" = [])))]
async fn delete(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let (t, u) = path.into_inner();
    let view = blocking(&engine, move |e| e.put_entity(&t, &u, None)).await?;
    Ok(HttpResponse::Ok().json(view))
}
