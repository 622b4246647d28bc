//! `GET /metrics`: the Prometheus text format (PROTOCOL §9). The admin token guards it like
//! every admin route (no token or a wrong one: 401; a node token: 403), unless the operator
//! opened it with `server.metrics_open` (`STARSYNC_METRICS_OPEN=true`) for a scraper on a
//! private network that should not hold the admin token.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::ApiResult;
use super::extract::{admin, blocking};
use crate::engine::Engine;
use crate::metrics::{Metrics, CONTENT_TYPE};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/metrics").route(web::get().to(metrics)));
}

/// The server's metrics in the Prometheus text format 0.0.4.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta",
    description = "Prometheus text format (version 0.0.4). Needs the admin token, unless the \
                   server runs with `STARSYNC_METRICS_OPEN=true`. Node and pending-change figures \
                   are recomputed at most every 5 seconds.",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)),
    security(("admin_token" = []), ()))]
async fn metrics(
    engine: web::Data<Engine>,
    metrics: web::Data<Metrics>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    if !engine.settings().server.metrics_open {
        admin(&engine, &req).await?;
    }
    let text = blocking(&engine, move |e| metrics.render(e)).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
        .body(text))
}
