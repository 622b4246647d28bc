//! HTTP layer: thin actix handlers that map requests to engine calls and results to HTTP.
//! Each module exposes one `configure`.

pub mod budget;
pub mod changes;
pub mod conflicts;
pub mod dashboard;
pub mod delta;
pub mod entities;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod nodes;
pub mod openapi;
pub mod push;
pub mod sync;
pub mod watermelon;

use actix_web::web;

/// A route path whose unsupported methods answer JSON 405 `method_not_allowed` (rather than
/// falling through to the 404 of unknown paths).
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::ResponseError;
    error::ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        req.method(),
        req.path()
    ))
    .error_response()
}

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // A query string serde cannot read (e.g. a repeated parameter) is malformed input: answer
    // the protocol's JSON error (422 `invalid_request`), not actix's plain-text 400.
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _req| {
        error::ApiError::from(crate::engine::EngineError::InvalidRequest(format!(
            "query string is malformed: {err}"
        )))
        .into()
    }));
    health::configure(cfg);
    sync::configure(cfg);
    watermelon::configure(cfg);
    push::configure(cfg);
    changes::configure(cfg);
    delta::configure(cfg);
    events::configure(cfg);
    nodes::configure(cfg);
    conflicts::configure(cfg);
    entities::configure(cfg);
    dashboard::configure(cfg);
    openapi::configure(cfg);
    metrics::configure(cfg);
}
