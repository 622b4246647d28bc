//! Request helpers shared by the handlers: bearer tokens, size-limited bodies, JSON parsing
//! with the protocol's 400/422 split, and running engine work off the async workers.

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use crate::engine::{Engine, EngineError, EngineResult};

/// The bearer token of the request, if any.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The request's `Content-Length`, when it has a valid one.
pub fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Reads the body, refusing it as soon as it passes `limit` (before it is all in memory).
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    too_large: impl Fn(String) -> ApiError,
) -> ApiResult<web::Bytes> {
    let message = || format!("request body is larger than the limit of {limit} bytes");
    let declared = content_length(req);
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(message()));
    }
    // Sized once when the length is known: growing by doubling would briefly hold a large
    // body twice.
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadJson(format!("could not read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(message()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses JSON: not JSON at all → 400 `invalid_request`; JSON with missing or malformed
/// fields → 422 `invalid_request`.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::Engine(EngineError::InvalidRequest(format!(
                "request fields are missing or malformed: {e}"
            )))
        } else {
            ApiError::BadJson(format!("request body is not valid JSON: {e}"))
        }
    })
}

/// Runs blocking engine work on actix's blocking pool.
pub async fn blocking<T, F>(engine: &web::Data<Engine>, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> EngineResult<T> + Send + 'static,
{
    let engine = engine.clone();
    Ok(web::block(move || f(&engine)).await??)
}

/// Authenticates the caller as the admin, off the async workers.
pub async fn admin(engine: &web::Data<Engine>, req: &HttpRequest) -> ApiResult<()> {
    let token = bearer(req);
    blocking(engine, move |e| e.require_admin(token.as_deref())).await
}
