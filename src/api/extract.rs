//! Request helpers shared by the handlers: bearer tokens, size- and time-limited bodies, JSON
//! parsing with the protocol's 400/422 split, and running engine work off the async workers.

use std::time::{Duration, Instant};

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

/// How long a request body may take to arrive (`server.body_timeout_secs` and
/// `server.body_min_bytes_per_sec`), installed as app data by startup. actix's own timeouts stop
/// at the request head; without this a client holding a valid token could start a body and
/// never finish it, keeping a connection and a file descriptor forever.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    /// Time allowed before any byte counts (a slow start, a short stall).
    pub grace: Duration,
    /// Each received byte extends the deadline by `1 / min_bytes_per_sec` seconds.
    pub min_bytes_per_sec: u64,
}

impl BodyDeadline {
    pub fn from_settings(server: &crate::config::ServerSettings) -> BodyDeadline {
        BodyDeadline {
            grace: Duration::from_secs(server.body_timeout_secs),
            min_bytes_per_sec: server.body_min_bytes_per_sec.max(1),
        }
    }

    /// When the next bytes must have arrived, `received` bytes after `start`. The deadline
    /// moves with the bytes, so a body that keeps up with the minimum rate is never cut, and
    /// one that stalls is cut after the grace plus the credit it earned — a whole body of `n`
    /// bytes gets at most `grace + n / min_bytes_per_sec`.
    fn due(&self, start: Instant, received: usize) -> Instant {
        start
            + self.grace
            + Duration::from_secs_f64(received as f64 / self.min_bytes_per_sec as f64)
    }
}

impl Default for BodyDeadline {
    /// The shipped defaults (config/default.toml), for an app built without settings.
    fn default() -> BodyDeadline {
        BodyDeadline {
            grace: Duration::from_secs(30),
            min_bytes_per_sec: 16 * 1024,
        }
    }
}

/// Reads the body, refusing it as soon as it passes `limit` (before it is all in memory), or
/// with 408 `request_timeout` when it arrives slower than the [`BodyDeadline`] allows.
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
    let deadline = req.app_data::<BodyDeadline>().copied().unwrap_or_default();
    let start = Instant::now();
    // Sized once when the length is known: growing by doubling would briefly hold a large
    // body twice.
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let wait = deadline
            .due(start, body.len())
            .saturating_duration_since(Instant::now());
        let next = actix_web::rt::time::timeout(wait, payload.next())
            .await
            .map_err(|_| {
                ApiError::Timeout(format!(
                    "request body too slow: {} of {} bytes arrived in {:.0} s; a body must \
                     arrive within {} s plus 1 s per {} bytes",
                    body.len(),
                    declared.map_or_else(|| "?".to_string(), |n| n.to_string()),
                    start.elapsed().as_secs_f64(),
                    deadline.grace.as_secs(),
                    deadline.min_bytes_per_sec
                ))
            })?;
        let Some(chunk) = next else { break };
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
    // PROTOCOL §6: every body is a JSON object. serde reads a struct from an array too
    // (`["code"]` would register a node named `code`), so the shape is checked first.
    if !is_json_object(body) {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::Engine(EngineError::InvalidRequest(
                    "the request body must be a JSON object".into(),
                )),
                Err(e) => ApiError::BadJson(format!("request body is not valid JSON: {e}")),
            },
        );
    }
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

/// True when the body's first non-blank byte opens an object (the rest is left to the parser).
pub fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Runs blocking engine work on actix's blocking pool, inside the request's tracing span (a
/// span does not follow work to another thread by itself), so the engine's log lines carry
/// the request id.
pub async fn blocking<T, F>(engine: &web::Data<Engine>, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> EngineResult<T> + Send + 'static,
{
    let engine = engine.clone();
    let span = tracing::Span::current();
    Ok(web::block(move || span.in_scope(|| f(&engine))).await??)
}

/// Authenticates the caller as the admin, off the async workers.
pub async fn admin(engine: &web::Data<Engine>, req: &HttpRequest) -> ApiResult<()> {
    let token = bearer(req);
    blocking(engine, move |e| e.require_admin(token.as_deref())).await
}

/// The caller as a node, and its request body read within the memory budget and parsed as a
/// JSON object: what every node-token write endpoint of another client protocol starts with
/// (delta, simple push, WatermelonDB push). The token is checked before a byte of the body is
/// read, so an unknown caller cannot make the server buffer anything.
pub async fn node_and_body<T: DeserializeOwned>(
    engine: &web::Data<Engine>,
    budget: &web::Data<super::budget::MemoryBudget>,
    req: &HttpRequest,
    payload: web::Payload,
) -> ApiResult<(crate::store::models::Node, T)> {
    let token = bearer(req);
    let node = blocking(engine, move |e| e.require_node(token.as_deref())).await?;
    let limit = engine.settings().server.max_body_bytes;
    let _lease = budget
        .bodies
        .lease(content_length(req).unwrap_or(limit).min(limit))
        .await?;
    let body = read_body(req, payload, limit, ApiError::TooLarge).await?;
    Ok((node, parse_json(&body)?))
}

/// A `limit` query parameter: absent or empty gives `default`; anything but a whole number from
/// 1 to `max` is 422 `invalid_request` (one rule for every paged admin list).
pub fn limit_param(raw: Option<&str>, default: i64, max: i64) -> ApiResult<i64> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::from(EngineError::InvalidRequest(format!(
                    "limit must be a whole number from 1 to {max}"
                )))
            }),
    }
}
