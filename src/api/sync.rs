//! `/api/sync/register`, `/api/sync/exchange`, `/api/sync/status`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};

use super::budget::{
    inflated_bound, KnownTokens, Lease, MemoryBudget, ANSWER_FACTOR, ANSWER_FLOOR, PACKET_FACTOR,
};
use super::error::{ApiError, ApiResult};
use super::extract::{admin, bearer, blocking, content_length, parse_json, read_body};
use crate::engine::{Engine, EngineError, EngineResult, ExchangeOutcome, ReceiveReport};
use crate::metrics::Metrics;
use starsync_protocol::api::{
    ExchangeRequest, ExchangeResponse, NodeStatus, RegisterRequest, RegisterResponse, ServerStatus,
};
use starsync_protocol::codec::{self, decode_hex_packet_sized};
use starsync_protocol::Packet;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/sync/register").route(web::post().to(register)))
        .service(super::resource("/api/sync/exchange").route(web::post().to(exchange)))
        .service(super::resource("/api/sync/status").route(web::get().to(server_status)))
        .service(super::resource("/api/sync/status/{node_id}").route(web::get().to(node_status)));
}

/// Registers a node and shows its token (once).
#[utoipa::path(post, path = "/api/sync/register", operation_id = "register", tag = "sync",
    description = "Needs the admin token unless the server runs with open registration.",
    request_body = RegisterRequest,
    responses((status = 201, description = "The node is registered; `auth_token` is shown only here", body = RegisterResponse)),
    security(("admin_token" = []), ()))]
async fn register(
    engine: web::Data<Engine>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    if !engine.settings().server.open_registration {
        // PROTOCOL §6 lists only 401 for registration: a node token is not the admin token.
        admin(&engine, &req).await.map_err(|e| match e {
            ApiError::Engine(EngineError::Forbidden(_)) => {
                ApiError::Engine(EngineError::Unauthorized(
                    "registration needs the admin token; a node token cannot register nodes".into(),
                ))
            }
            other => other,
        })?;
    }
    let body = read_body(&req, payload, 64 * 1024, ApiError::TooLarge).await?;
    let request: RegisterRequest = parse_json(&body)?;
    let resp = blocking(&engine, move |e| e.register(request)).await?;
    Ok(HttpResponse::Created().json(resp))
}

/// `POST /api/sync/exchange`: decode, apply, answer — each stage within the memory budget
/// ([`MemoryBudget`]), so many large exchanges at once wait their turn instead of exhausting
/// memory. Applies a node's packet and answers the server's packet for it (PROTOCOL §3, §6).
#[utoipa::path(post, path = "/api/sync/exchange", operation_id = "exchange", tag = "sync",
    request_body = ExchangeRequest,
    responses((status = 200, description = "The packet was accepted (applied or a duplicate); rejected changes are listed in `errors`", body = ExchangeResponse)),
    security(("node_token" = [])))]
async fn exchange(
    engine: web::Data<Engine>,
    budget: web::Data<MemoryBudget>,
    metrics: web::Data<Metrics>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let started = Instant::now();
    let result = answer_exchange(engine, budget, req, payload).await;
    let recorded = result.as_ref().map(|(report, _)| report);
    metrics.record_exchange(recorded.map_err(ApiError::code), started.elapsed());
    result.map(|(_, answer)| answer)
}

/// The exchange itself; its report comes back beside the answer for the metrics.
async fn answer_exchange(
    engine: web::Data<Engine>,
    budget: web::Data<MemoryBudget>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<(ReceiveReport, HttpResponse)> {
    let token = bearer(&req);
    // A token that authenticated recently, with a small body: authenticated below, on the
    // exchange's one blocking trip ([`KnownTokens`]). Any other: before its body is read.
    let known = content_length(&req).is_some_and(|n| n <= KnownTokens::BODY_BYTES)
        && token.as_deref().is_some_and(|t| budget.known.contains(t));
    let node = if known {
        None
    } else {
        let t = token.clone();
        let node = blocking(&engine, move |e| e.require_node(t.as_deref())).await?;
        if let Some(t) = token.as_deref() {
            budget.known.remember(t);
        }
        Some(node)
    };
    let settings = engine.settings();
    let limit = settings.server.max_body_bytes;
    let max_packet = settings.server.max_packet_bytes;

    let body_lease = budget
        .bodies
        .lease(content_length(&req).unwrap_or(limit).min(limit))
        .await?;
    let body = read_body(&req, payload, limit, |m| {
        ApiError::Engine(EngineError::PacketTooLarge(m))
    })
    .await?;
    let mut packet_lease = budget
        .packets
        .lease(PACKET_FACTOR * inflated_bound(body.len(), max_packet))
        .await?;
    // A large body is decoded before the writer's turn, so the turn is never held while its
    // inflated bound waits in the packet pool; a small one (every idle exchange) is decoded in
    // the same trip to a blocking thread as the rest.
    let input = if body.len() > INLINE_DECODE_BYTES && !known {
        let (packet, inflated) =
            blocking(&engine, move |_| decode_envelope(&body, max_packet)).await?;
        drop(body_lease);
        packet_lease.shrink_to(PACKET_FACTOR * inflated);
        Input::Packet(packet)
    } else {
        Input::Body(body, body_lease)
    };

    // The answer's estimate reads what is pending for the node (one query, but slow when
    // large entities crowd the database): it runs in the writer's turn, so estimates never
    // take every blocking thread. When the answer's memory is free at once, the exchange and
    // the answer's gzip follow on the same blocking thread: one trip instead of four (each
    // trip is a thread wake-up, a sizeable part of an idle exchange).
    let turn = budget.writer_turn().await?;
    let answers = budget.answers.clone();
    let budget_for_auth = budget.clone();
    let stage = blocking(&engine, move |e| {
        let (caller, answer_bytes) = match node {
            Some(node) => {
                let bytes = e.next_answer_bytes(&node)?;
                (node, bytes)
            }
            None => e.require_node_sized(token.as_deref()).inspect_err(|_| {
                if let Some(t) = token.as_deref() {
                    budget_for_auth.known.forget(t);
                }
            })?,
        };
        let packet = match input {
            Input::Packet(packet) => packet,
            Input::Body(body, body_lease) => {
                let (packet, inflated) = decode_envelope(&body, max_packet)?;
                drop((body, body_lease));
                packet_lease.shrink_to(PACKET_FACTOR * inflated);
                packet
            }
        };
        let want = ANSWER_FACTOR * answer_bytes.max(ANSWER_FLOOR);
        Ok(match answers.try_lease(want) {
            Some(lease) => {
                let (outcome, gz) = exchange_and_encode(e, &caller, packet, &lease)?;
                Stage::Done(outcome, gz, lease, packet_lease)
            }
            None => Stage::Wait(caller, packet, want, packet_lease),
        })
    })
    .await?;
    let (outcome, gz, mut answer_lease, packet_lease) = match stage {
        Stage::Done(outcome, gz, lease, packet_lease) => (outcome, gz, lease, packet_lease),
        Stage::Wait(node, packet, want, packet_lease) => {
            let lease = budget.answers.lease(want).await?;
            let (outcome, lease) = blocking(&engine, move |e| {
                exchange_and_encode(e, &node, packet, &lease).map(|done| (done, lease))
            })
            .await?;
            let (outcome, gz) = outcome;
            (outcome, gz, lease, packet_lease)
        }
    };
    drop(turn);
    drop(packet_lease);

    let ExchangeOutcome { report, .. } = outcome;
    answer_lease.shrink_to(gz.len());
    let message = if report.duplicate {
        "Duplicate packet: already applied, acknowledged again".to_string()
    } else if report.error_count == 0 {
        "Sync completed successfully".to_string()
    } else {
        format!(
            "Sync completed; {} change(s) rejected (see errors)",
            report.error_count
        )
    };
    let fields = ExchangeResponse {
        success: true,
        duplicate: report.duplicate,
        packet_data: String::new(),
        processed_count: report.processed_count,
        error_count: report.error_count,
        conflict_count: report.conflict_count,
        errors: report.errors.clone(),
        conflicts: report.conflicts.clone(),
        message,
    };
    let answer = HttpResponse::Ok()
        .content_type("application/json")
        .body(AnswerBody::new(&fields, gz, answer_lease));
    Ok((report, answer))
}

/// Bodies up to this size are decoded in the exchange's one trip to a blocking thread (see
/// [`answer_exchange`]); larger ones before the writer's turn.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// The request body, or the packet already decoded from it.
enum Input {
    Body(web::Bytes, Lease),
    Packet(Packet),
}

/// Where the exchange's blocking trip got: done (the outcome, the answer's gzip, its memory),
/// or waiting for the answer's memory (the caller, the packet, the bytes to wait for).
enum Stage {
    Done(ExchangeOutcome, Vec<u8>, Lease, Lease),
    Wait(crate::store::models::Node, Packet, usize, Lease),
}

/// Applies the packet and builds the answer within `lease`, then compresses it.
fn exchange_and_encode(
    e: &Engine,
    node: &crate::store::models::Node,
    packet: Packet,
    lease: &Lease,
) -> EngineResult<(ExchangeOutcome, Vec<u8>)> {
    let reserved = if lease.exclusive() {
        usize::MAX
    } else {
        lease.bytes() / ANSWER_FACTOR
    };
    let mut outcome = e.exchange(node, packet, reserved)?;
    let gz = codec::encode_packet(&outcome.answer);
    // The packet's changes are no longer needed once compressed.
    outcome.answer.changes = Vec::new();
    Ok((outcome, gz))
}

/// The exchange envelope, borrowing `packet_data` from the body (no copy of a 16 MiB string).
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    packet_data: std::borrow::Cow<'a, str>,
}

/// The envelope's packet and its decompressed size.
fn decode_envelope(body: &[u8], max_packet: usize) -> EngineResult<(Packet, usize)> {
    if !super::extract::is_json_object(body) {
        return Err(EngineError::InvalidPacket(
            "body must be a JSON object {\"packet_data\": \"<hex of gzip packet>\"}".into(),
        ));
    }
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|err| {
        EngineError::InvalidPacket(format!(
            "body must be JSON {{\"packet_data\": \"<hex of gzip packet>\"}}: {err}"
        ))
    })?;
    Ok(decode_hex_packet_sized(&envelope.packet_data, max_packet)?)
}

/// The exchange answer's body, streamed: the JSON fields around `packet_data`, and the answer
/// packet's gzip turned into hex one chunk at a time as the connection takes it. The whole hex
/// text (twice the gzip) is never held, and the answer's memory lease is returned when the
/// body is done or dropped.
struct AnswerBody {
    /// The JSON up to and including the opening quote of `packet_data`.
    head: Option<web::Bytes>,
    gz: Vec<u8>,
    sent: usize,
    /// The JSON from the closing quote of `packet_data` on.
    tail: Option<web::Bytes>,
    lease: Option<Lease>,
}

/// Gzip bytes per chunk (sent as twice as many hex characters).
const HEX_CHUNK: usize = 32 * 1024;

impl AnswerBody {
    fn new(fields: &ExchangeResponse, gz: Vec<u8>, lease: Lease) -> AnswerBody {
        // `packet_data` is serialized empty and split at: it follows two booleans, so its
        // first occurrence is the field itself, whatever the strings after it hold.
        const FIELD: &[u8] = b"\"packet_data\":\"";
        let json = serde_json::to_vec(fields).expect("an answer serializes to JSON");
        let at = json
            .windows(FIELD.len())
            .position(|w| w == FIELD)
            .expect("the answer has a packet_data field")
            + FIELD.len();
        let json = web::Bytes::from(json);
        AnswerBody {
            head: Some(json.slice(..at)),
            tail: Some(json.slice(at..)),
            gz,
            sent: 0,
            lease: Some(lease),
        }
    }
}

impl MessageBody for AnswerBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        let len = self.head.as_ref().map_or(0, |b| b.len())
            + 2 * (self.gz.len() - self.sent)
            + self.tail.as_ref().map_or(0, |b| b.len());
        BodySize::Sized(len as u64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(head)));
        }
        if this.sent < this.gz.len() {
            let end = (this.sent + HEX_CHUNK).min(this.gz.len());
            let chunk = hex::encode(&this.gz[this.sent..end]);
            this.sent = end;
            return Poll::Ready(Some(Ok(web::Bytes::from(chunk))));
        }
        if let Some(tail) = this.tail.take() {
            this.gz = Vec::new();
            this.lease = None;
            return Poll::Ready(Some(Ok(tail)));
        }
        Poll::Ready(None)
    }
}

/// One node's counters, as the server sees them.
#[utoipa::path(get, path = "/api/sync/status/{node_id}", operation_id = "node_status", tag = "sync",
    params(("node_id" = String, Path, description = "The node's id (or its code, for the admin)")),
    responses((status = 200, description = "The node's status", body = NodeStatus)),
    security(("admin_token" = []), ("node_token" = [])))]
async fn node_status(
    engine: web::Data<Engine>,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let token = bearer(&req);
    let node_id = path.into_inner();
    let status = blocking(&engine, move |e| {
        let caller = e.authenticate(token.as_deref())?;
        e.node_status(&caller, &node_id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(status))
}

/// Hub statistics.
#[utoipa::path(get, path = "/api/sync/status", operation_id = "server_status", tag = "sync",
    responses((status = 200, description = "Hub statistics", body = ServerStatus)),
    security(("admin_token" = [])))]
async fn server_status(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    admin(&engine, &req).await?;
    let status = blocking(&engine, |e| e.server_status()).await?;
    Ok(HttpResponse::Ok().json(status))
}
