//! Entities over HTTP. The admin lists them by type (the dashboard's browser), reads, writes
//! and deletes them as the hub (server-authored versions that reach every node; the only way
//! to change an `immutable` type). A node token on the one-entity routes reads and writes as
//! that node (PROTOCOL §11.3: `engine::rest`), with `ETag`/`If-Match` as versions.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{admin, bearer, blocking, limit_param, parse_json, read_body};
use crate::engine::admin::entities::MAX_PAGE;
use crate::engine::rest::{parse_if_match, RestWrite};
use crate::engine::{Caller, Engine, EngineError};
use crate::store::models::Node;
use starsync_protocol::api::{EntityPage, EntityTypeList, EntityView, EntityWrite};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/entity-types").route(web::get().to(types)))
        .service(super::resource("/api/sync/entities").route(web::get().to(list)));
    cfg.service(
        super::resource("/api/sync/entities/{entity_type}/{entity_uuid}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::patch().to(patch))
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

/// The caller of an entity route: the admin (hub writes) or a node (its own reads and
/// changes, PROTOCOL §11.3).
async fn caller(engine: &web::Data<Engine>, req: &HttpRequest) -> ApiResult<Caller> {
    let token = bearer(req);
    blocking(engine, move |e| e.authenticate(token.as_deref())).await
}

/// An entity answer: the entity, with its version as the `ETag` (what `If-Match` takes back).
fn entity_answer(view: &EntityView) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", view.version)))
        .json(view)
}

/// The request's `If-Match` as a base version (None: absent or `*`); malformed: 422.
fn if_match(req: &HttpRequest) -> ApiResult<Option<i64>> {
    let mut values = req.headers().get_all(header::IF_MATCH);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let text = first.to_str().ok().filter(|_| values.next().is_none());
    let text = text.ok_or_else(|| {
        EngineError::InvalidRequest("If-Match must be one quoted entity version, e.g. \"3\"".into())
    })?;
    Ok(parse_if_match(Some(text))?)
}

/// A node's write: the body (`{"data": {...}}` unless deleting), `If-Match`, then the engine.
async fn node_write(
    engine: web::Data<Engine>,
    req: HttpRequest,
    node: Node,
    path: (String, String),
    payload: Option<web::Payload>,
    patch: bool,
) -> ApiResult<HttpResponse> {
    let base = if_match(&req)?;
    let write = match payload {
        Some(payload) => {
            let limit = engine.settings().server.max_body_bytes;
            let body = read_body(&req, payload, limit, ApiError::TooLarge).await?;
            let write: EntityWrite = parse_json(&body)?;
            if patch {
                RestWrite::Patch(write.data)
            } else {
                RestWrite::Put(write.data)
            }
        }
        None => RestWrite::Delete,
    };
    let (t, u) = path;
    let view = blocking(&engine, move |e| {
        e.node_write_entity(&node, &t, &u, base, write)
    })
    .await?;
    Ok(entity_answer(&view))
}

/// One entity (a tombstone too, with `deleted: true`). With a node token: only within the
/// node's scopes and types (404 otherwise, as for a missing entity).
#[utoipa::path(get, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "get_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")),
    responses((status = 200, description = "The entity; `ETag` is its version", body = EntityView)),
    security(("admin_token" = []), ("node_token" = [])))]
async fn get(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let who = caller(&engine, &req).await?;
    let (t, u) = path.into_inner();
    let view = blocking(&engine, move |e| match who {
        Caller::Admin => e.get_entity(&t, &u),
        Caller::Node(n) => e.node_get_entity(&n, &t, &u),
    })
    .await?;
    Ok(entity_answer(&view))
}

/// Admin: writes a hub-authored version, sent to every node. Node: the node's change, based
/// on `If-Match` (absent: the current version); a lost conflict is 409 `conflict` with the
/// server's `entity` and the history row's `conflict_id`.
#[utoipa::path(put, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "put_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
        ("If-Match" = Option<String>, Header, description = "Node writes: the version the change is based on, quoted (the ETag)")),
    request_body = EntityWrite,
    responses((status = 200, description = "The new version; `ETag` is its version", body = EntityView)),
    security(("admin_token" = []), ("node_token" = [])))]
async fn put(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let node = match caller(&engine, &req).await? {
        Caller::Node(n) => *n,
        Caller::Admin => {
            let limit = engine.settings().server.max_body_bytes;
            let body = read_body(&req, payload, limit, ApiError::TooLarge).await?;
            let write: EntityWrite = parse_json(&body)?;
            let (t, u) = path.into_inner();
            let view = blocking(&engine, move |e| e.put_entity(&t, &u, Some(write.data))).await?;
            return Ok(entity_answer(&view));
        }
    };
    node_write(engine, req, node, path.into_inner(), Some(payload), false).await
}

/// A node's partial update: `data` holds only the fields to change (PROTOCOL §5.1); fields
/// changed on the server meanwhile by others merge without conflict. Node tokens only.
#[utoipa::path(patch, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "patch_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
        ("If-Match" = Option<String>, Header, description = "The version the change is based on, quoted (the ETag)")),
    request_body = EntityWrite,
    responses((status = 200, description = "The new version; `ETag` is its version", body = EntityView)),
    security(("node_token" = [])))]
async fn patch(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let node = match caller(&engine, &req).await? {
        Caller::Node(n) => *n,
        Caller::Admin => {
            return Err(EngineError::Forbidden(
                "PATCH is a node's partial update; the admin writes a whole state with PUT".into(),
            )
            .into())
        }
    };
    node_write(engine, req, node, path.into_inner(), Some(payload), true).await
}

/// Admin: deletes an entity (a tombstone sent to every node; deleting a tombstone changes
/// nothing). Node: the node's DELETE, based on `If-Match` (a deletion wins, PROTOCOL §5).
#[utoipa::path(delete, path = "/api/sync/entities/{entity_type}/{entity_uuid}", operation_id = "delete_entity", tag = "entities",
    params(("entity_type" = String, Path, description = "The entity type"), ("entity_uuid" = String, Path, description = "The entity id: a lowercase UUID, or any id matching ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
        ("If-Match" = Option<String>, Header, description = "Node writes: the version the change is based on, quoted (the ETag)")),
    responses((status = 200, description = "The tombstone; `ETag` is its version", body = EntityView)),
    security(("admin_token" = []), ("node_token" = [])))]
async fn delete(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    match caller(&engine, &req).await? {
        Caller::Node(n) => node_write(engine, req, *n, path.into_inner(), None, false).await,
        Caller::Admin => {
            let (t, u) = path.into_inner();
            let view = blocking(&engine, move |e| e.put_entity(&t, &u, None)).await?;
            Ok(entity_answer(&view))
        }
    }
}
