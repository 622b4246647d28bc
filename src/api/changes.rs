//! `GET /api/sync/changes`: the change feed (PROTOCOL §11.3). Thin: authentication and
//! parameters here, the reading in `engine::changes` and `engine::cursor`.

use std::collections::BTreeMap;

use actix_web::middleware::Compress;
use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, ApiResult};
use super::extract::{bearer, blocking};
use crate::engine::changes::FeedQuery;
use crate::engine::Engine;
use crate::engine::EngineError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/api/sync/changes")
            .wrap(Compress::default())
            .route(web::get().to(changes)),
    );
}

/// The feed's query string.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The `cursor` (a number) or `updatedAt` (an ISO 8601 time) of the last page; any other
    /// time means "changes committed after that instant". Absent: every live entity.
    since: Option<String>,
    /// Comma-separated entity types (default: every type the node sees).
    types: Option<String>,
    /// Records per page, 1 to 10,000 (default 1,000).
    limit: Option<String>,
}

/// The feed's answer (documentation only: it is written as raw JSON).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChangesAnswer {
    /// The `since` of the request, echoed (null without one).
    since: Option<serde_json::Value>,
    /// The cursor as a time: send it back as `since`.
    #[schema(rename = "updatedAt")]
    updated_at: String,
    /// The cursor as a number (the log position): send it back as `since`.
    cursor: i64,
    /// More changes follow: ask again at once with this page's cursor.
    has_more: bool,
    /// By type: records (`data` with `id`, `updated_at` and `version`).
    entities: BTreeMap<String, Vec<serde_json::Value>>,
    /// By type: ids deleted, or no longer in the node's scopes.
    deleted: BTreeMap<String, Vec<String>>,
}

/// A page of the change log since a cursor.
#[utoipa::path(get, path = "/api/sync/changes", operation_id = "change_feed",
    tag = "changes", params(ChangesQuery),
    description = "Change feed (PROTOCOL §11.3): the changes since a cursor, in commit order, within the \
                   node's scopes and types; `has_more` when more follow.",
    responses((status = 200, description = "A page of changes and the cursor that continues it", body = ChangesAnswer)),
    security(("node_token" = [])))]
async fn changes(engine: web::Data<Engine>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let token = bearer(&req);
    let node = blocking(&engine, move |e| e.require_node(token.as_deref())).await?;
    let query = web::Query::<ChangesQuery>::from_query(req.query_string()).map_err(|e| {
        ApiError::from(EngineError::InvalidRequest(format!(
            "query string is malformed: {e}"
        )))
    })?;
    let q = FeedQuery::parse(
        query.since.as_deref(),
        query.types.as_deref(),
        query.limit.as_deref(),
    )?;
    let body = blocking(&engine, move |e| e.change_feed(&node, &q)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}
