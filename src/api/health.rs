//! `GET /health` for load balancers: no auth. It checks that this process can reach its
//! database, so a balancer stops sending nodes to a process whose database is gone (every
//! exchange would fail there anyway) — and that it can write there: after a write transaction
//! failed for want of a working database (a full disk, a read-only file), it answers 503
//! `database_write_failed` until a write succeeds. It tries one itself (an empty write
//! transaction), so the process comes back by itself once the disk has room again, even when
//! the balancer sends it no traffic meanwhile.

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

/// What the health check found.
enum Found {
    Ok,
    /// Writes fail since this time.
    WritesFail(String),
}

/// Whether this process can serve: it reaches its database, and its writes work.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "meta",
    responses(
        (status = 200, description = "`{\"status\": \"ok\"}`", body = Health),
        (status = 503, description = "The database is unreachable (`database_unavailable`) or writes fail (`database_write_failed`)", body = Health),
    ))]
async fn health(engine: web::Data<Engine>) -> HttpResponse {
    let engine = engine.clone();
    // In the request's span, like `extract::blocking`: a failed probe logs with the request id.
    let span = tracing::Span::current();
    let check = move || {
        let _in_span = span.enter();
        engine.check_database()?;
        Ok(match engine.write_failed_at() {
            Some(_) if engine.probe_write().is_ok() => Found::Ok,
            Some(at) => Found::WritesFail(engine.write_failed_at().unwrap_or(at)),
            None => Found::Ok,
        })
    };
    match web::block(check).await {
        Ok(Ok(Found::Ok)) => HttpResponse::Ok().json(Health {
            status: HealthStatus::Ok,
            error: None,
            message: None,
        }),
        Ok(Ok(Found::WritesFail(since))) => unavailable(
            ErrorCode::DatabaseWriteFailed,
            &format!(
                "writes to the database fail (the last failed at {since}): a full disk or a \
                 read-only database? Failed writes were rolled back; see the server log"
            ),
        ),
        Ok(Err::<_, crate::engine::EngineError>(e)) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            unavailable(
                ErrorCode::DatabaseUnavailable,
                "this server cannot reach its database; see its log",
            )
        }
        Err(_) => unavailable(ErrorCode::InternalError, "the health check could not run"),
    }
}
