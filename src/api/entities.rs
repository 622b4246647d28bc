//! Admin access to entities: read, write and delete as the hub (server-authored versions that
//! reach every node; the only way to change an `immutable` type).

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ApiResult};
use super::extract::{admin, blocking, parse_json, read_body};
use crate::engine::Engine;
use starsync_protocol::api::EntityWrite;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/api/sync/entities/{entity_type}/{entity_uuid}")
            .route(web::get().to(get))
            .route(web::put().to(put))
            .route(web::delete().to(delete)),
    );
}

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
