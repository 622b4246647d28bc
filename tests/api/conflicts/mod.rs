//! Conflicts (PROTOCOL §5) and the conflicts API (§6), black-box over HTTP.
//!
//! The standard conflict: nodes A and B both hold version 1 of an entity; A updates it (the
//! server's version 2, authored by A); then B sends an update still based on version 1.

mod admin_resolution;
mod deletes;
mod field_merge;
mod field_rules;
mod listing;
mod no_silent_loss;
mod not_a_conflict;
mod repeated_edits;
mod strategies;
use crate::helpers::*;
use serde_json::{json, Value};

/// Per-type rules used by most tests (the default strategy stays `server_wins`).
const RULES: &str = r#"
[conflicts.types.Stamp]
strategy = "timestamp_wins"

[conflicts.types.Doc]
strategy = "client_wins"

[conflicts.types.Ticket]
strategy = "manual"

[conflicts.types.Task]
priority_values = { status = "done" }

[conflicts.types.DoneDoc]
strategy = "client_wins"
priority_values = { status = "done" }

[conflicts.types.Setting]
immutable = true

[conflicts.types.Phoenix]
resurrect = true
"#;

fn rules_app() -> TestApp {
    TestApp::spawn_with(RULES, &[])
}

/// A node change with an explicit `updated_at`.
fn change_at(op: &str, t: &str, u: &str, base: u64, data: Value, updated_at: &str) -> Value {
    let mut c = change(op, t, u, base, data);
    c["updated_at"] = json!(updated_at);
    c
}

/// The changes of an answer packet that concern one entity.
fn changes_for(ex: &Exchange, u: &str) -> Vec<Value> {
    ex.changes()
        .into_iter()
        .filter(|c| c["entity_uuid"] == json!(u))
        .collect()
}

/// History rows of one entity, newest first.
fn history(app: &TestApp, u: &str) -> Vec<Value> {
    app.conflicts(&format!("?entity_uuid={u}"))
}

fn ok(ex: &Exchange) {
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["success"], true, "{}", ex.body);
}

/// Registers A and B; A creates the entity (version 1) and B receives it.
fn both_at_v1(app: &TestApp, t: &str, data: Value) -> (TestNode, TestNode, String) {
    both_at_v1_at(app, t, data, None)
}

fn both_at_v1_at(
    app: &TestApp,
    t: &str,
    data: Value,
    updated_at: Option<&str>,
) -> (TestNode, TestNode, String) {
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let mut c = upsert(t, &u, 0, data.clone());
    if let Some(ts) = updated_at {
        c["updated_at"] = json!(ts);
    }
    let ex = a.sync(app, vec![c]);
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    b.drain(app);
    assert_eq!(b.version_of(t, &u), 1);
    assert_eq!(b.entities[&(t.to_string(), u.clone())].1, data);
    (a, b, u)
}

/// A's update based on version 1 (no conflict): the server's version 2, authored by A.
fn a_updates(app: &TestApp, a: &mut TestNode, c: Value) {
    let ex = a.sync(app, vec![c]);
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    assert!(ex.changes().is_empty(), "no echo to A: {:?}", ex.changes());
}

/// Checks the one conflict an exchange reports and returns its id.
fn single_conflict(
    ex: &Exchange,
    t: &str,
    u: &str,
    resolution: &str,
    server_version: u64,
) -> String {
    ok(ex);
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    assert_eq!(
        ex.body["processed_count"], 1,
        "conflicts count as processed: {}",
        ex.body
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    let list = ex.body["conflicts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", ex.body);
    let c = &list[0];
    assert_eq!(c["entity_type"], t);
    assert_eq!(c["entity_uuid"], json!(u));
    assert_eq!(c["resolution"], resolution, "{c}");
    assert_eq!(c["server_version"], server_version, "{c}");
    let id = c["conflict_id"].as_str().expect("conflict_id").to_string();
    assert!(!id.is_empty());
    id
}

/// Checks an automatically decided history row.
fn assert_auto_row(row: &Value, id: &str, source: &str, data: &Value, resolution: &str, sv: u64) {
    assert_eq!(row["id"], id, "{row}");
    assert_eq!(row["source_node_id"], source, "{row}");
    assert!(
        row["serialized_data"].is_object(),
        "serialized_data is a JSON object: {row}"
    );
    assert_eq!(&row["serialized_data"], data, "{row}");
    assert_eq!(row["conflict_resolution"], resolution, "{row}");
    assert_eq!(row["server_version"], sv, "{row}");
    assert_eq!(row["resolved_by"], "auto", "{row}");
    assert!(
        row["resolved_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{row}"
    );
    assert!(
        row["arrival_time"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{row}"
    );
}

fn entity_state(app: &TestApp, t: &str, u: &str) -> Value {
    let (s, body) = app.entity(t, u);
    assert_eq!(s, 200, "{body}");
    body
}

fn server_status(app: &TestApp) -> Value {
    let (s, body) = app.get("/api/sync/status", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    body
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}
