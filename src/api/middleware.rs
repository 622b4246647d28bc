//! What every request and answer passes through around the handlers.
//!
//! - A URL holding a NUL (`%00`, in the path or the query) is refused with 422
//!   `invalid_request` before any handler runs: no id or parameter can hold one, and PostgreSQL
//!   refuses NUL in text, so such an id used to reach a query and answer 500. One check here
//!   covers every route, present and future.
//! - An error answer that is not JSON (actix's own answers, such as a path segment that is not
//!   UTF-8) gets the protocol's body `{"error", "message"}`, so clients can always branch on
//!   `error`.
//! - Every request runs in a tracing span carrying its request id ([`request_span`]), answered
//!   in `X-Request-Id`, so each log line written while handling it (JSON logs included) can be
//!   traced to one request, and a client can quote the id in a support request.
//!
//! Not covered, because actix-http answers them in its HTTP/1 codec, before any middleware or
//! handler runs and without a hook: a request head over 96 headers or 128 KiB (431), a request
//! target over 65,534 bytes (400), `Transfer-Encoding: chunked` together with `Content-Length`
//! and other malformed heads (400), and the slow-head timeout (408). Those answers have empty
//! bodies.

use std::time::Instant;

use actix_web::body::{to_bytes_limited, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use tracing::Instrument;

use super::error::ApiError;
use crate::engine::EngineError;
use starsync_protocol::api::ErrorBody;
use starsync_protocol::ErrorCode;

/// Longest original error text kept in the JSON message.
const MAX_ECHO: usize = 200;

/// The middleware (`actix_web::middleware::from_fn(api::middleware::guard)`).
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(part) = nul_in_url(&req) {
        let err = ApiError::from(EngineError::InvalidRequest(format!(
            "the URL {part} contains a NUL character (%00), which no id or parameter may hold"
        )));
        return Ok(req.into_response(err.error_response()));
    }
    let res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&res) {
        return Ok(res);
    }
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let detail = match to_bytes_limited(body, 16 * 1024).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => String::new(),
    };
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    // A server error's text may name internals: only the log sees it.
    let message = if detail.is_empty() || status.is_server_error() {
        reason
    } else {
        format!(
            "{reason}: {}",
            detail.chars().take(MAX_ECHO).collect::<String>()
        )
    };
    let mut json = HttpResponse::build(status).json(ErrorBody {
        error: code_for(status),
        message,
        expected_packet_no: None,
        entity: None,
        conflict_id: None,
    });
    // Keep what the original answer said about the connection and allowed methods.
    for name in [header::ALLOW, header::CONNECTION, header::RETRY_AFTER] {
        if let Some(v) = head.headers().get(&name) {
            json.headers_mut().insert(name, v.clone());
        }
    }
    Ok(ServiceResponse::new(req, json))
}

/// The request id header, read from a request (when safe) and always set on the answer.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming `X-Request-Id` kept (a proxy's UUID or trace id fits).
const MAX_REQUEST_ID: usize = 64;

/// Longest request path written to the log (a 64 KiB path would make a 64 KiB line).
const MAX_LOGGED_PATH: usize = 256;

/// Log target of the one line per answered request.
pub const HTTP_LOG: &str = "starsync::http";

/// The middleware (`actix_web::middleware::from_fn(api::middleware::request_span)`), outermost:
/// opens the span `request{request_id=…}` around everything the request does, logs one line
/// when it is answered (method, path without the query, status, milliseconds — never headers,
/// tokens or bodies), and answers the id in `X-Request-Id`.
///
/// The id is the caller's `X-Request-Id` when it is short and plain (at most 64 characters of
/// `A-Z a-z 0-9 - _ .`), so a proxy's id follows the request through; anything else could
/// forge log content or bloat every line, and is replaced by a fresh one.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    let path: String = req.path().chars().take(MAX_LOGGED_PATH).collect();
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let _in_span = span.enter();
    let ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1000.0);
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            tracing::info!(target: HTTP_LOG, %method, %path, status, ms, "answered");
            if let Ok(value) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(REQUEST_ID, value);
            }
            Ok(res)
        }
        Err(e) => {
            tracing::info!(target: HTTP_LOG, %method, %path, ms, error = %e, "failed");
            Err(e)
        }
    }
}

/// An incoming request id worth keeping: short, and only characters that need no escaping in
/// any log format.
fn is_safe_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Which part of the URL (`path` or `query`) holds an encoded NUL.
fn nul_in_url(req: &ServiceRequest) -> Option<&'static str> {
    let has = |s: &str| s.contains("%00");
    if has(req.uri().path()) {
        Some("path")
    } else if has(req.query_string()) {
        Some("query")
    } else {
        None
    }
}

fn is_json(res: &ServiceResponse<BoxBody>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The protocol's code for an error status that no handler chose.
fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        s if s.is_server_error() => ErrorCode::InternalError,
        _ => ErrorCode::InvalidRequest,
    }
}

#[cfg(test)]
mod request_id_tests {
    #[test]
    fn only_short_plain_request_ids_are_kept() {
        for ok in ["a", "3f2c-11ee.b_9", &"x".repeat(64)] {
            assert!(super::is_safe_request_id(ok), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a\"b", "a\nb", "é", "a{b}"] {
            assert!(!super::is_safe_request_id(bad), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App, HttpResponse};

    #[actix_web::test]
    async fn every_answer_carries_a_request_id() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(super::request_span))
                .route(
                    "/ok",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                ),
        )
        .await;
        let id_of = |headers: &actix_web::http::header::HeaderMap| {
            headers
                .get(super::REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let res = test::call_service(&app, test::TestRequest::get().uri("/ok").to_request()).await;
        let fresh = id_of(res.headers()).expect("an id is generated");
        assert_eq!(fresh.len(), 32, "{fresh}");
        let req = test::TestRequest::get()
            .uri("/ok")
            .insert_header(("X-Request-Id", "proxy-42"))
            .to_request();
        assert_eq!(
            id_of(test::call_service(&app, req).await.headers()).as_deref(),
            Some("proxy-42")
        );
        let req = test::TestRequest::get()
            .uri("/ok")
            .insert_header(("X-Request-Id", "a b"))
            .to_request();
        let replaced = id_of(test::call_service(&app, req).await.headers()).unwrap();
        assert_ne!(replaced, "a b");
        assert_ne!(replaced, fresh);
    }

    #[actix_web::test]
    async fn error_answers_without_json_get_the_protocol_body() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(super::guard))
                .route(
                    "/empty",
                    web::get().to(|| async { HttpResponse::BadRequest().finish() }),
                )
                .route(
                    "/text",
                    web::get().to(|| async { HttpResponse::PayloadTooLarge().body("too big") }),
                )
                .route(
                    "/boom",
                    web::get().to(|| async { HttpResponse::InternalServerError().body("secret") }),
                )
                .route(
                    "/json",
                    web::get().to(|| async {
                        HttpResponse::Conflict().json(serde_json::json!({"error": "code_taken"}))
                    }),
                )
                .route(
                    "/ok",
                    web::get().to(|| async { HttpResponse::Ok().body("fine") }),
                ),
        )
        .await;
        let call = |path: &'static str| {
            let req = test::TestRequest::get().uri(path).to_request();
            test::call_service(&app, req)
        };
        for (path, status, code, message) in [
            ("/empty", 400, "invalid_request", "bad request"),
            (
                "/text",
                413,
                "payload_too_large",
                "payload too large: too big",
            ),
            ("/boom", 500, "internal_error", "internal server error"),
            ("/json", 409, "code_taken", ""),
            ("/x%00y", 422, "invalid_request", ""),
            ("/ok?a=%00", 422, "invalid_request", ""),
        ] {
            let res = call(path).await;
            assert_eq!(res.status().as_u16(), status, "{path}");
            let body: serde_json::Value = test::read_body_json(res).await;
            assert_eq!(body["error"], code, "{path}: {body}");
            if !message.is_empty() {
                assert_eq!(body["message"], message, "{path}");
            }
        }
        let res = call("/ok").await;
        assert_eq!(test::read_body(res).await, "fine");
    }
}
