//! Node administration: list, disable, enable, rotate token.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ApiResult};
use super::extract::{admin, blocking, parse_json, read_body};
use crate::engine::Engine;
use starsync_protocol::api::{NodeInfo, NodeList, PatchNodeRequest, TokenResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/nodes").route(web::get().to(list)))
        .service(super::resource("/api/sync/nodes/{id}").route(web::patch().to(patch)))
        .service(super::resource("/api/sync/nodes/{id}/disable").route(web::post().to(disable)))
        .service(super::resource("/api/sync/nodes/{id}/enable").route(web::post().to(enable)))
        .service(super::resource("/api/sync/nodes/{id}/token").route(web::post().to(rotate)));
}

/// Every registered node (never a token).
#[utoipa::path(get, path = "/api/sync/nodes", operation_id = "list_nodes", tag = "nodes",
    responses((status = 200, description = "The nodes", body = NodeList)),
    security(("admin_token" = [])))]
async fn list(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let nodes = blocking(&engine, |e| e.list_nodes()).await?;
    Ok(HttpResponse::Ok().json(NodeList { nodes }))
}

/// Changes a node's scopes and/or types (PROTOCOL §10; a hub with `[scopes]` only). A gained
/// scope's entities reach the node through its ordinary packets; for a lost one it is sent
/// DELETEs. `"types": null` means every type again.
#[utoipa::path(patch, path = "/api/sync/nodes/{id}", operation_id = "patch_node", tag = "nodes",
    params(("id" = String, Path, description = "The node's id")),
    request_body = PatchNodeRequest,
    responses((status = 200, description = "The node with its new scopes and types", body = NodeInfo)),
    security(("admin_token" = [])))]
async fn patch(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let limit = engine.settings().server.max_body_bytes;
    let body = read_body(&req, payload, limit, ApiError::TooLarge).await?;
    let request: PatchNodeRequest = parse_json(&body)?;
    let id = path.into_inner();
    let node = blocking(&engine, move |e| {
        let n = e.find_node_by_id(&id)?;
        e.patch_node(&n.id, request.scopes, request.types)
    })
    .await?;
    Ok(HttpResponse::Ok().json(node))
}

async fn set_active(
    engine: web::Data<Engine>,
    req: HttpRequest,
    id: String,
    active: bool,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let node = blocking(&engine, move |e| {
        let n = e.find_node_by_id(&id)?;
        e.set_node_active(&n.id, active)
    })
    .await?;
    Ok(HttpResponse::Ok().json(node))
}

/// Disables a node: its token gets 401 until it is enabled again.
#[utoipa::path(post, path = "/api/sync/nodes/{id}/disable", operation_id = "disable_node", tag = "nodes",
    params(("id" = String, Path, description = "The node's id or code")), responses((status = 200, description = "The node", body = NodeInfo)),
    security(("admin_token" = [])))]
async fn disable(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_active(engine, req, path.into_inner(), false).await
}

/// Enables a disabled node.
#[utoipa::path(post, path = "/api/sync/nodes/{id}/enable", operation_id = "enable_node", tag = "nodes",
    params(("id" = String, Path, description = "The node's id or code")), responses((status = 200, description = "The node", body = NodeInfo)),
    security(("admin_token" = [])))]
async fn enable(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_active(engine, req, path.into_inner(), true).await
}

/// Issues a new token for a node; the old one stops working at once.
#[utoipa::path(post, path = "/api/sync/nodes/{id}/token", operation_id = "rotate_node_token", tag = "nodes",
    params(("id" = String, Path, description = "The node's id or code")), responses((status = 200, description = "The new token, shown only here", body = TokenResponse)),
    security(("admin_token" = [])))]
async fn rotate(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let id = path.into_inner();
    let resp = blocking(&engine, move |e| {
        let n = e.find_node_by_id(&id)?;
        e.rotate_token(&n.id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(resp))
}
