//! `GET /api/sync/watermelon/pull` and `POST /api/sync/watermelon/push`: WatermelonDB's
//! `synchronize()` (PROTOCOL §11.1). Thin: authentication, parameters and streaming here, the
//! rules in `engine::watermelon`.

use std::collections::BTreeMap;

use actix_web::middleware::Compress;
use actix_web::{web, HttpRequest, HttpResponse};

use super::budget::MemoryBudget;
use super::error::{ApiError, ApiResult};
use super::extract::{bearer, blocking, node_and_body};
use crate::engine::watermelon::{parse_pull_cursor, PullStream, PushRequest};
use crate::engine::{Engine, EngineError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/api/sync/watermelon/pull")
            // The answer is streamed; gzip (when the client accepts it) compresses it chunk by
            // chunk as it goes out.
            .wrap(Compress::default())
            .route(web::get().to(pull)),
    )
    .service(super::resource("/api/sync/watermelon/push").route(web::post().to(push)));
}

/// The pull's query string (`synchronize()` passes all three; only the cursor matters here).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PullQuery {
    /// The `timestamp` of the client's last pull; absent, `null` or `0` for a first pull.
    last_pulled_at: Option<String>,
    /// The app's schema version (informational).
    #[allow(dead_code)]
    schema_version: Option<String>,
    /// WatermelonDB's migration description or `null` (informational: every table's changes
    /// are sent whatever the client's schema).
    #[allow(dead_code)]
    migration: Option<String>,
}

/// The pull's answer (documentation only: it is written as a stream).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PullAnswer {
    /// By table: `{"created": [record], "updated": [record], "deleted": ["id"]}`; a record is
    /// the entity's data with `"id"`.
    changes: BTreeMap<String, serde_json::Value>,
    /// The cursor to send as `last_pulled_at` next time (a number, unique to this pull).
    timestamp: i64,
}

/// The push's body (documentation; parsed as `engine::watermelon::PushRequest`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PushBody {
    /// By table: `{"created": [record], "updated": [record], "deleted": ["id"]}`, records as
    /// WatermelonDB sends them (`_status` and `_changed` are dropped).
    changes: BTreeMap<String, serde_json::Value>,
    /// The `timestamp` of the pull this push follows.
    last_pulled_at: i64,
}

/// The push's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PushAnswer {
    /// Records refused one by one (immutable types, outside the node's view), by table; every
    /// other record was applied.
    #[serde(rename = "experimentalRejectedIds")]
    experimental_rejected_ids: BTreeMap<String, Vec<String>>,
}

/// Changes since `last_pulled_at`, streamed.
#[utoipa::path(get, path = "/api/sync/watermelon/pull", operation_id = "watermelon_pull",
    tag = "watermelon", params(PullQuery),
    description = "WatermelonDB pull (PROTOCOL §11.1): every live entity on a first pull, then the changes \
                   since the cursor. Streamed; gzip when the client accepts it.",
    responses((status = 200, description = "The changes and the next cursor", body = PullAnswer)),
    security(("node_token" = [])))]
async fn pull(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let token = bearer(&req);
    let node = blocking(&engine, move |e| e.require_node(token.as_deref())).await?;
    let query = web::Query::<PullQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::from(EngineError::InvalidRequest(format!(
            "query string is malformed: {e}"
        )))
    })?;
    let last = parse_pull_cursor(query.last_pulled_at.as_deref())?;
    let stream = blocking(&engine, move |e| e.watermelon_pull(&node, last)).await?;
    let body = futures_util::stream::unfold(Some(stream), |state| async move {
        let mut stream: PullStream = state?;
        match web::block(move || {
            let chunk = stream.next_chunk();
            (stream, chunk)
        })
        .await
        {
            Ok((stream, Ok(Some(bytes)))) => Some((Ok(web::Bytes::from(bytes)), Some(stream))),
            Ok((_, Ok(None))) => None,
            // The status line is sent: all that is left is to cut the answer short, which the
            // client sees as a failed pull (and retries), never as a complete one.
            Ok((_, Err(e))) => {
                tracing::error!(error = %e, "a WatermelonDB pull failed while streaming");
                Some((Err(std::io::Error::other("pull failed")), None))
            }
            Err(e) => {
                tracing::error!(error = %e, "a WatermelonDB pull's worker failed");
                Some((Err(std::io::Error::other("pull failed")), None))
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

/// Applies the client's changes, all or nothing.
#[utoipa::path(post, path = "/api/sync/watermelon/push", operation_id = "watermelon_push",
    tag = "watermelon", request_body = PushBody,
    description = "WatermelonDB push (PROTOCOL §11.1): applied in one transaction, or nothing (409 `conflict` \
                   when a record changed on the hub after `last_pulled_at`).",
    responses((status = 200, description = "Applied, except the records listed as rejected", body = PushAnswer)),
    security(("node_token" = [])))]
async fn push(
    engine: web::Data<Engine>,
    budget: web::Data<MemoryBudget>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (node, request): (_, PushRequest) = node_and_body(&engine, &budget, &req, payload).await?;
    let rejected = blocking(&engine, move |e| e.watermelon_push(&node, request)).await?;
    Ok(HttpResponse::Ok().json(PushAnswer {
        experimental_rejected_ids: rejected,
    }))
}
