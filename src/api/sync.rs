//! `/api/sync/register`, `/api/sync/exchange`, `/api/sync/status`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ApiResult};
use super::extract::{admin, bearer, blocking, parse_json, read_body};
use crate::engine::{Engine, EngineError};
use starsync_protocol::api::{
    ExchangeRequest, ExchangeResponse, NodeStatus, RegisterRequest, RegisterResponse, ServerStatus,
};
use starsync_protocol::{codec, decode_hex_packet};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/register").route(web::post().to(register)))
        .service(super::resource("/api/sync/exchange").route(web::post().to(exchange)))
        .service(super::resource("/api/sync/status").route(web::get().to(server_status)))
        .service(super::resource("/api/sync/status/{node_id}").route(web::get().to(node_status)));
}

/// Registers a node and shows its token (once).
#[utoipa::path(post, path = "/api/sync/register", operation_id = "register", tag = "sync",
    description = "Needs the admin token unless the server runs with open registration.",
    request_body = RegisterRequest,
    responses((status = 201, description = "The node is registered; `auth_token` is shown only here", body = RegisterResponse)),
    security(("admin_token" = []), ()))]
async fn register(
    engine: web::Data<Engine>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    if !engine.settings().server.open_registration {
        // PROTOCOL §6 lists only 401 for registration: a node token is not the admin token.
        admin(&engine, &req).await.map_err(|e| match e {
            ApiError::Engine(EngineError::Forbidden(_)) => {
                ApiError::Engine(EngineError::Unauthorized(
                    "registration needs the admin token; a node token cannot register nodes".into(),
                ))
            }
            other => other,
        })?;
    }
    let body = read_body(&req, payload, 64 * 1024, ApiError::TooLarge).await?;
    let request: RegisterRequest = parse_json(&body)?;
    let resp = blocking(&engine, move |e| e.register(request)).await?;
    Ok(HttpResponse::Created().json(resp))
}

/// Applies a node's packet and answers the server's packet for it (PROTOCOL §3, §6).
#[utoipa::path(post, path = "/api/sync/exchange", operation_id = "exchange", tag = "sync",
    request_body = ExchangeRequest,
    responses((status = 200, description = "The packet was accepted (applied or a duplicate); rejected changes are listed in `errors`", body = ExchangeResponse)),
    security(("node_token" = [])))]
async fn exchange(
    engine: web::Data<Engine>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let token = bearer(&req);
    let node = blocking(&engine, move |e| e.require_node(token.as_deref())).await?;
    let limit = engine.settings().server.max_body_bytes;
    let body = read_body(&req, payload, limit, |m| {
        ApiError::Engine(EngineError::PacketTooLarge(m))
    })
    .await?;
    let max_packet = engine.settings().server.max_packet_bytes;
    let outcome = blocking(&engine, move |e| {
        let envelope: ExchangeRequest = serde_json::from_slice(&body).map_err(|err| {
            EngineError::InvalidPacket(format!(
                "body must be JSON {{\"packet_data\": \"<hex of gzip packet>\"}}: {err}"
            ))
        })?;
        drop(body);
        let packet = decode_hex_packet(&envelope.packet_data, max_packet)?;
        drop(envelope);
        let outcome = e.exchange(&node, packet)?;
        let hex = codec::encode_packet_hex(&outcome.answer);
        Ok((outcome, hex))
    })
    .await?;
    let (outcome, packet_data) = outcome;
    let r = outcome.report;
    let message = if r.duplicate {
        "Duplicate packet: already applied, acknowledged again".to_string()
    } else if r.errors.is_empty() {
        "Sync completed successfully".to_string()
    } else {
        format!(
            "Sync completed; {} change(s) rejected (see errors)",
            r.errors.len()
        )
    };
    Ok(HttpResponse::Ok().json(ExchangeResponse {
        success: true,
        duplicate: r.duplicate,
        packet_data,
        processed_count: r.processed_count,
        error_count: r.errors.len() as u64,
        conflict_count: r.conflicts.len() as u64,
        errors: r.errors,
        conflicts: r.conflicts,
        message,
    }))
}

/// One node's counters, as the server sees them.
#[utoipa::path(get, path = "/api/sync/status/{node_id}", operation_id = "node_status", tag = "sync",
    params(("node_id" = String, Path, description = "The node's id (or its code, for the admin)")),
    responses((status = 200, description = "The node's status", body = NodeStatus)),
    security(("admin_token" = []), ("node_token" = [])))]
async fn node_status(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let token = bearer(&req);
    let node_id = path.into_inner();
    let status = blocking(&engine, move |e| {
        let caller = e.authenticate(token.as_deref())?;
        e.node_status(&caller, &node_id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(status))
}

/// Hub statistics.
#[utoipa::path(get, path = "/api/sync/status", operation_id = "server_status", tag = "sync",
    responses((status = 200, description = "Hub statistics", body = ServerStatus)),
    security(("admin_token" = [])))]
async fn server_status(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let status = blocking(&engine, |e| e.server_status()).await?;
    Ok(HttpResponse::Ok().json(status))
}
