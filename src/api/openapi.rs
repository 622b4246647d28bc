//! `GET /api/openapi.json`: the OpenAPI 3.1 description of every route (PROTOCOL §9),
//! generated from the handlers' `#[utoipa::path]` annotations and the protocol crate's types,
//! so it cannot drift from what the server parses and answers.
//!
//! Error answers are added here from one table ([`ERRORS`]) rather than on each handler: every
//! status lists exactly the `ErrorCode`s it can carry (the `error` enum is narrowed per status),
//! so a client generator, or schemathesis in CI, knows that a 409 on `/api/sync/exchange` is
//! `packet_gap` or `schema_mismatch` and nothing else.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use starsync_protocol::api::ErrorBody;
use starsync_protocol::ErrorCode;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    changes, conflicts, delta, entities, events, health, metrics, nodes, push, sync, watermelon,
};

/// The security scheme of the admin token (`STARSYNC_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "admin_token";
/// The security scheme of a node's `auth_token` (from registration or rotation).
pub const NODE_TOKEN: &str = "node_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "starsync",
        description = "Star-topology replication hub: nodes register, then exchange numbered gzip \
                       packets (hex in JSON); an admin manages nodes, conflicts and entities. \
                       Every error answers `{\"error\": <ErrorCode>, \"message\": <sentence>}`."
    ),
    paths(
        health::health,
        openapi_json,
        metrics::metrics,
        sync::register,
        sync::exchange,
        sync::server_status,
        sync::node_status,
        watermelon::pull,
        watermelon::push,
        push::push,
        changes::changes,
        delta::delta,
        events::events,
        nodes::list,
        nodes::patch,
        nodes::disable,
        nodes::enable,
        nodes::rotate,
        conflicts::list,
        conflicts::resolve,
        entities::types,
        entities::list,
        entities::get,
        entities::put,
        entities::patch,
        entities::delete,
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&SecuritySchemes, &ErrorAnswers)
)]
pub struct ApiDoc;

use ErrorCode as E;

/// Error statuses, each with the codes it can carry.
type Answers = &'static [(u16, &'static [ErrorCode])];

/// Statuses and codes every authenticated operation can answer.
const AUTH: Answers = &[(401, &[E::Unauthorized]), (403, &[E::Forbidden])];

/// Statuses and codes of reading a JSON request body (`extract::read_body`, `parse_json`).
const BODY: Answers = &[
    (400, &[E::InvalidRequest]),
    (408, &[E::RequestTimeout]),
    (413, &[E::PayloadTooLarge]),
    (422, &[E::InvalidRequest]),
];

const NOT_FOUND: Answers = &[(404, &[E::NotFound])];
/// A query string serde cannot read, or a parameter out of range.
const BAD_QUERY: Answers = &[(422, &[E::InvalidRequest])];
/// A database failure: logged, answered with a generic sentence.
const INTERNAL: Answers = &[(500, &[E::InternalError])];

/// The error answers of each operation (by `operation_id`), as groups merged per status.
const ERRORS: &[(&str, &[Answers])] = &[
    (
        "register",
        &[
            &[(401, &[E::Unauthorized]), (409, &[E::CodeTaken])],
            BODY,
            INTERNAL,
        ],
    ),
    (
        "exchange",
        &[
            AUTH,
            &[
                (400, &[E::InvalidPacket]),
                (408, &[E::RequestTimeout]),
                (409, &[E::PacketGap, E::SchemaMismatch]),
                (413, &[E::PacketTooLarge]),
                (422, &[E::InvalidAck]),
            ],
            INTERNAL,
        ],
    ),
    ("watermelon_pull", &[AUTH, BAD_QUERY, INTERNAL]),
    (
        "watermelon_push",
        &[AUTH, BODY, &[(409, &[E::Conflict])], INTERNAL],
    ),
    (
        "simple_push",
        &[AUTH, BODY, &[(413, &[E::TooManyChanges])], INTERNAL],
    ),
    ("change_feed", &[AUTH, BAD_QUERY, INTERNAL]),
    (
        "delta_sync",
        &[AUTH, BODY, &[(413, &[E::TooManyChanges])], INTERNAL],
    ),
    ("metrics", &[AUTH, INTERNAL]),
    (
        "events",
        &[
            &[(401, &[E::Unauthorized]), (503, &[E::TooManyStreams])],
            INTERNAL,
        ],
    ),
    ("server_status", &[AUTH, INTERNAL]),
    ("node_status", &[AUTH, NOT_FOUND, INTERNAL]),
    ("list_nodes", &[AUTH, INTERNAL]),
    ("patch_node", &[AUTH, BODY, NOT_FOUND, INTERNAL]),
    ("disable_node", &[AUTH, NOT_FOUND, INTERNAL]),
    ("enable_node", &[AUTH, NOT_FOUND, INTERNAL]),
    ("rotate_node_token", &[AUTH, NOT_FOUND, INTERNAL]),
    ("list_conflicts", &[AUTH, BAD_QUERY, INTERNAL]),
    (
        "resolve_conflict",
        &[
            AUTH,
            BODY,
            NOT_FOUND,
            &[(409, &[E::AlreadyResolved])],
            INTERNAL,
        ],
    ),
    ("list_entity_types", &[AUTH, INTERNAL]),
    ("list_entities", &[AUTH, BAD_QUERY, INTERNAL]),
    ("get_entity", &[AUTH, BAD_QUERY, NOT_FOUND, INTERNAL]),
    (
        "put_entity",
        &[
            AUTH,
            BODY,
            NOT_FOUND,
            &[(409, &[E::Conflict]), (413, &[E::EntityTooLarge])],
            INTERNAL,
        ],
    ),
    (
        "patch_entity",
        &[
            AUTH,
            BODY,
            NOT_FOUND,
            &[(409, &[E::Conflict]), (413, &[E::EntityTooLarge])],
            INTERNAL,
        ],
    ),
    (
        "delete_entity",
        &[
            AUTH,
            BAD_QUERY,
            NOT_FOUND,
            &[(409, &[E::Conflict])],
            INTERNAL,
        ],
    ),
];

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                ADMIN_TOKEN,
                "The admin token (`STARSYNC_ADMIN_TOKEN`, or the one generated at first start).",
            ),
            (
                NODE_TOKEN,
                "A node's `auth_token`, shown once by registration or token rotation.",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, doc: &mut Document) {
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_errors(op);
            }
        }
    }
}

fn add_errors(op: &mut Operation) {
    let Some((_, groups)) = ERRORS
        .iter()
        .find(|(id, _)| op.operation_id.as_deref() == Some(*id))
    else {
        return;
    };
    let mut by_status: std::collections::BTreeMap<u16, Vec<ErrorCode>> = Default::default();
    for &(status, codes) in groups.iter().flat_map(|g| g.iter()) {
        let list = by_status.entry(status).or_default();
        for code in codes {
            if !list.contains(code) {
                list.push(*code);
            }
        }
    }
    for (status, codes) in by_status {
        let names: Vec<String> = codes.iter().map(|c| c.as_str().to_string()).collect();
        let schema = AllOfBuilder::new()
            .item(Ref::from_schema_name("ErrorBody"))
            .item(
                ObjectBuilder::new().property(
                    "error",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(names.clone())),
                ),
            );
        let response = ResponseBuilder::new()
            .description(format!("`{}`", names.join("`, `")))
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(schema)).build(),
            )
            .build();
        op.responses
            .responses
            .insert(status.to_string(), response.into());
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/api/openapi.json").route(web::get().to(openapi_json)));
}

/// This description.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description of every route",
               content_type = "application/json", body = Object))
)]
async fn openapi_json() -> HttpResponse {
    match ApiDoc::openapi().to_json() {
        Ok(json) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(json),
        Err(e) => {
            use actix_web::ResponseError;
            super::error::ApiError::Internal(format!("API description: {e}")).error_response()
        }
    }
}
