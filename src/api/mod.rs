//! HTTP layer: thin actix handlers that map requests to engine calls and results to HTTP.
//! Each module exposes one `configure`.

pub mod conflicts;
pub mod entities;
pub mod error;
pub mod extract;
pub mod health;
pub mod nodes;
pub mod sync;

use actix_web::web;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    sync::configure(cfg);
    nodes::configure(cfg);
    conflicts::configure(cfg);
    entities::configure(cfg);
}
