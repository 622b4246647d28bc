//! What every request and answer passes through around the handlers.
//!
//! - A URL holding a NUL (`%00`, in the path or the query) is refused with 422
//!   `invalid_request` before any handler runs: no id or parameter can hold one, and PostgreSQL
//!   refuses NUL in text, so such an id used to reach a query and answer 500. One check here
//!   covers every route, present and future.
//! - An error answer that is not JSON (actix's own answers, such as a path segment that is not
//!   UTF-8) gets the protocol's body `{"error", "message"}`, so clients can always branch on
//!   `error`.
//!
//! Not covered, because actix-http answers them in its HTTP/1 codec, before any middleware or
//! handler runs and without a hook: a request head over 96 headers or 128 KiB (431), a request
//! target over 65,534 bytes (400), `Transfer-Encoding: chunked` together with `Content-Length`
//! and other malformed heads (400), and the slow-head timeout (408). Those answers have empty
//! bodies.

use actix_web::body::{to_bytes_limited, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

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
    });
    // Keep what the original answer said about the connection and allowed methods.
    for name in [header::ALLOW, header::CONNECTION, header::RETRY_AFTER] {
        if let Some(v) = head.headers().get(&name) {
            json.headers_mut().insert(name, v.clone());
        }
    }
    Ok(ServiceResponse::new(req, json))
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
mod tests {
    use actix_web::{test, web, App, HttpResponse};

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
