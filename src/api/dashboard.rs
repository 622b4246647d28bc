//! The operator's dashboard at `/admin/`: a static page, one small script and a style sheet,
//! compiled into the binary. Hubs run on closed networks, so nothing is fetched from elsewhere
//! and there is no build step. The page holds no data and needs no auth; everything it shows
//! comes from the admin API, called by the script with the admin token the operator types in
//! (kept in the tab's session storage only; docs/dashboard.md).

use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// Only this hub's own files run or load (no inline script or style: data that slipped into
/// markup could not execute); no framing (clickjacking); no form may submit anywhere (the
/// sign-in form is handled by the script, and without it must not put the token in a URL).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// (path, content type, body) of every file the dashboard serves.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/admin/",
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    ),
    (
        "/admin/app.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    ),
    (
        "/admin/app.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    ),
    (
        "/admin/favicon.svg",
        "image/svg+xml",
        include_str!("dashboard/favicon.svg"),
    ),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The page's relative links need the trailing slash.
    cfg.service(super::resource("/admin").route(web::get().to(|| async {
        HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "/admin/"))
            .finish()
    })));
    for &(path, content_type, body) in ASSETS {
        cfg.service(
            super::resource(path)
                .route(web::get().to(move || async move { asset(content_type, body) })),
        );
    }
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Small files: always fetched afresh, so an upgraded hub never runs an old script,
        // and no page of a signed-in session is kept on disk.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}
