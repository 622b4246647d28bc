//! `GET /health` for load balancers: no auth. It checks that this process can reach its
//! database, so a balancer stops sending nodes to a process whose database is gone (every
//! exchange would fail there anyway).

use actix_web::{web, HttpResponse};
use serde::Serialize;
use starsync_protocol::ErrorCode;

use crate::engine::Engine;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/health").route(web::get().to(health)));
}

/// The health answer: `{"status": "ok"}`, or `unavailable` with the error body's fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: HealthStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Unavailable,
}

fn unavailable(error: ErrorCode, message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(Health {
        status: HealthStatus::Unavailable,
        error: Some(error),
        message: Some(message.to_string()),
    })
}

/// Whether this process can serve: it reaches its database.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "meta",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = Health),
        (status = 503, description = "The database is unreachable (`database_unavailable`)", body = Health),
    ))]
async fn health(engine: web::Data<Engine>) -> HttpResponse {
    let engine = engine.clone();
    match web::block(move || engine.check_database()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(Health {
            status: HealthStatus::Ok,
            error: None,
            message: None,
        }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            unavailable(
                ErrorCode::DatabaseUnavailable,
                "this server cannot reach its database; see its log",
            )
        }
        Err(_) => unavailable(ErrorCode::InternalError, "the health check could not run"),
    }
}
