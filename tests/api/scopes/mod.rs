//! Scopes (PROTOCOL §10): tenancy and selective sync, through HTTP, the `starsync` CLI and the
//! node library. One file per topic; `no_leak` is the randomized test.

mod delivery;
mod no_leak;
mod node_client;
mod reads;
mod registration;
mod writes;

use crate::helpers::*;
use serde_json::{json, Value};

/// The hub the tests run: `tenant_id` holds the scope, `Badge` keeps it in `owner`, `Country`
/// is global reference data, `Memo` conflicts stay for the admin (manual).
pub const SCOPED: &str = r#"
[scopes]
field = "tenant_id"

[conflicts.types.Badge]
scope_field = "owner"

[conflicts.types.Country]
scope = "global"

[conflicts.types.Memo]
strategy = "manual"
"#;

pub fn scoped_app() -> TestApp {
    TestApp::spawn_with(SCOPED, &[])
}

/// Registers a node with these scopes (and types, when given).
pub fn node_with(app: &TestApp, code: &str, scopes: &[&str], types: Option<&[&str]>) -> TestNode {
    let mut extra = json!({ "scopes": scopes });
    if let Some(t) = types {
        extra["types"] = json!(t);
    }
    app.register_with(code, extra)
}

/// An admin write (PUT) that must succeed; answers the entity view.
pub fn admin_put(app: &TestApp, t: &str, u: &str, data: Value) -> Value {
    let (s, body) = app.put(
        &format!("/api/sync/entities/{t}/{u}"),
        Some(ADMIN),
        &json!({ "data": data }),
    );
    assert_eq!(s, 200, "{body}");
    body
}

/// `(entity_type, entity_uuid, operation)` of an answer's changes.
pub fn ops(changes: &[Value]) -> Vec<(String, String, String)> {
    changes
        .iter()
        .map(|c| {
            (
                c["entity_type"].as_str().unwrap().to_string(),
                c["entity_uuid"].as_str().unwrap().to_string(),
                c["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The ids among changes (sorted).
pub fn ids(changes: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = changes
        .iter()
        .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The only rejection of an exchange answer: (reason, message).
pub fn rejection(ex: &Exchange) -> (String, String) {
    assert_eq!(ex.status, 200, "{}", ex.body);
    let errors = ex.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{}", ex.body);
    (
        errors[0]["reason"].as_str().unwrap().to_string(),
        errors[0]["message"].as_str().unwrap().to_string(),
    )
}
