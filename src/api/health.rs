//! `GET /health` for load balancers: no auth. It checks that this process can reach its
//! database, so a balancer stops sending nodes to a process whose database is gone (every
//! exchange would fail there anyway).

use actix_web::{web, HttpResponse};
use starsync_protocol::ErrorCode;

use crate::engine::Engine;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/health").route(web::get().to(health)));
}

async fn health(engine: web::Data<Engine>) -> HttpResponse {
    let engine = engine.clone();
    match web::block(move || engine.check_database()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(serde_json::json!({"status": "ok"})),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            HttpResponse::ServiceUnavailable().json(serde_json::json!({
                "status": "unavailable",
                "error": ErrorCode::DatabaseUnavailable,
                "message": "this server cannot reach its database; see its log",
            }))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": "unavailable",
            "error": ErrorCode::InternalError,
            "message": "the health check could not run",
        })),
    }
}
