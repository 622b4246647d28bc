//! Conflicts (PROTOCOL §5) and the conflicts API (§6), black-box over HTTP.
//!
//! The standard conflict: nodes A and B both hold version 1 of an entity; A updates it (the
//! server's version 2, authored by A); then B sends an update still based on version 1.
mod common;
use common::*;
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

// ---------------------------------------------------------------- strategies

#[test]
fn server_wins_is_the_default_and_the_loser_gets_the_server_state_again() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));

    let p = b.packet(
        b.next_packet_no,
        b.acked,
        vec![upsert("Note", &u, 1, json!({"v": "b"}))],
    );
    let ex = b.post_packet(&app, &p);
    let id = single_conflict(&ex, "Note", &u, "server_wins", 2);
    b.next_packet_no += 1;
    b.apply(ex.packet.as_ref().unwrap());
    // The loser receives the server state in the same answer.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["version"], 2);
    assert_eq!(back[0]["operation"], "UPDATE");
    assert_eq!(back[0]["data"], json!({"v": "a"}));

    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));

    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "server_wins:server",
        2,
    );
    assert_eq!(rows[0]["entity_type"], "Note");
    assert_eq!(rows[0]["entity_uuid"], json!(u));

    // Resending the same packet is a duplicate: no second history row.
    // The duplicate's answer repeats the original report (the node may have lost it) but
    // nothing is applied or recorded again.
    let dup = b.post_packet(&app, &p);
    assert_eq!(dup.status, 200, "{}", dup.body);
    assert_eq!(dup.body["duplicate"], true);
    assert_eq!(dup.body["conflict_count"], 1);
    assert_eq!(dup.body["conflicts"][0]["conflict_id"], json!(id));
    assert_eq!(history(&app, &u).len(), 1);

    // A (the winner) gets nothing back; B, having acknowledged, gets nothing again.
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    let again = b.sync(&app, vec![]);
    assert!(changes_for(&again, &u).is_empty(), "{:?}", again.changes());
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
    assert_eq!(
        b.entities[&("Note".to_string(), u.clone())],
        (2, json!({"v": "a"}))
    );
    // Automatic rows are never unresolved.
    assert_eq!(app.node_status(&b)["unresolved_conflicts"], 0);
    assert_eq!(server_status(&app)["unresolved_conflicts"], 0);
}

#[test]
fn a_lost_conflict_answer_is_repaired_by_the_retry() {
    let app = TestApp::spawn();
    let (mut a, b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let p = b.packet(
        b.next_packet_no,
        b.acked,
        vec![upsert("Note", &u, 1, json!({"v": "b"}))],
    );
    // The answer is lost on the way; the node resends the identical packet.
    let first = b.post_packet(&app, &p);
    single_conflict(&first, "Note", &u, "server_wins", 2);
    let retry = b.post_packet(&app, &p);
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["duplicate"], true);
    // The retry learns about the conflict it missed; nothing is applied again.
    assert_eq!(retry.body["conflict_count"], 1);
    assert_eq!(retry.body["conflicts"], first.body["conflicts"]);
    assert_eq!(retry.body["processed_count"], 0);
    let back = changes_for(&retry, &u);
    assert_eq!(
        back.len(),
        1,
        "the server state comes again: {:?}",
        retry.changes()
    );
    assert_eq!(back[0]["data"], json!({"v": "a"}));
    assert_eq!(
        history(&app, &u).len(),
        1,
        "one row per conflict, not per delivery"
    );
}

#[test]
fn default_strategy_comes_from_the_environment() {
    let app = TestApp::spawn_with("", &[("STARSYNC_CONFLICT_STRATEGY", "client_wins")]);
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Note", &u, 1, json!({"v": "b"}))]);
    single_conflict(&ex, "Note", &u, "client_wins", 2);
    assert_eq!(entity_state(&app, "Note", &u)["data"], json!({"v": "b"}));
}

#[test]
fn timestamp_wins_newer_client_change_wins() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Stamp", json!({"v": "base"}));
    a_updates(
        &app,
        &mut a,
        change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "a"}),
            "2030-01-01T10:00:00Z",
        ),
    );
    let ex = b.sync(
        &app,
        vec![change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "b"}),
            "2030-01-01T10:00:01Z",
        )],
    );
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    // B won: it holds the server state, no echo.
    assert!(changes_for(&ex, &u).is_empty(), "{:?}", ex.changes());

    let e = entity_state(&app, "Stamp", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"v": "b"}));

    // The overwritten server version (A's) is in history.
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &a.id,
        &json!({"v": "a"}),
        "timestamp_wins:client",
        2,
    );

    // A receives B's version.
    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["version"], 3);
    assert_eq!(got[0]["data"], json!({"v": "b"}));
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
}

#[test]
fn timestamp_wins_older_client_change_loses() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Stamp", json!({"v": "base"}));
    a_updates(
        &app,
        &mut a,
        change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "a"}),
            "2030-01-01T10:00:00Z",
        ),
    );
    // B's edit arrives later but was made earlier.
    let ex = b.sync(
        &app,
        vec![change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "b"}),
            "2030-01-01T09:59:59Z",
        )],
    );
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    let back = changes_for(&ex, &u);
    assert_eq!(
        back.len(),
        1,
        "the loser gets the server state: {:?}",
        ex.changes()
    );
    assert_eq!(back[0]["version"], 2);
    assert_eq!(back[0]["data"], json!({"v": "a"}));

    let e = entity_state(&app, "Stamp", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "timestamp_wins:server",
        2,
    );
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
}

#[test]
fn timestamp_wins_tie_goes_to_the_server() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Stamp", json!({"v": "base"}));
    a_updates(
        &app,
        &mut a,
        change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "a"}),
            "2030-01-01T10:00:00Z",
        ),
    );
    // The same instant, written with a fraction.
    let ex = b.sync(
        &app,
        vec![change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "b"}),
            "2030-01-01T10:00:00.000Z",
        )],
    );
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    assert_eq!(changes_for(&ex, &u)[0]["data"], json!({"v": "a"}));
    assert_eq!(entity_state(&app, "Stamp", &u)["data"], json!({"v": "a"}));
    let rows = history(&app, &u);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "timestamp_wins:server",
        2,
    );
}

#[test]
fn client_wins_applies_the_change_and_keeps_the_overwritten_version() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Doc", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Doc", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Doc", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Doc", &u, "client_wins", 2);
    assert!(
        changes_for(&ex, &u).is_empty(),
        "no echo to the winner: {:?}",
        ex.changes()
    );

    let e = entity_state(&app, "Doc", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"v": "b"}));
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &a.id,
        &json!({"v": "a"}),
        "client_wins:client",
        2,
    );

    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "A receives B's version: {got:?}");
    assert_eq!(got[0]["version"], 3);
    assert_eq!(got[0]["operation"], "UPDATE");
    assert_eq!(got[0]["data"], json!({"v": "b"}));
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    let key = ("Doc".to_string(), u.clone());
    assert_eq!(a.entities[&key], (3, json!({"v": "b"})));
}

#[test]
fn manual_keeps_the_server_state_and_leaves_the_row_unresolved() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Ticket", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Ticket", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Ticket", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Ticket", &u, "manual", 2);
    // As under server_wins, the loser is sent the server state at once.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    assert_eq!(back[0]["data"], json!({"v": "a"}));
    assert_eq!(back[0]["version"], 2);

    let e = entity_state(&app, "Ticket", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));

    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["source_node_id"], b.id.as_str());
    assert_eq!(row["serialized_data"], json!({"v": "b"}));
    assert_eq!(row["conflict_resolution"], "manual:pending");
    assert_eq!(row["server_version"], 2);
    assert_eq!(row["resolved_at"], Value::Null);
    assert_eq!(row["resolved_by"], Value::Null);

    let unresolved = app.conflicts("?unresolved=true");
    assert_eq!(unresolved.len(), 1);
    assert_eq!(unresolved[0]["id"], id.as_str());
    assert_eq!(app.node_status(&b)["unresolved_conflicts"], 1);
    assert_eq!(app.node_status(&a)["unresolved_conflicts"], 0);
    assert_eq!(server_status(&app)["unresolved_conflicts"], 1);
    // The node may read its own status, with the count.
    let (s, mine) = app.get(&format!("/api/sync/status/{}", b.id), Some(&b.token));
    assert_eq!(s, 200, "{mine}");
    assert_eq!(mine["unresolved_conflicts"], 1);

    // A is not sent anything; B, after acknowledging, nothing more.
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
}

// ---------------------------------------------------------------- what is not a conflict

#[test]
fn a_node_overwriting_its_own_unacknowledged_change_is_not_a_conflict() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    // Two edits based on version 1 in two packets, then two more in one packet.
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a1"})));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a2"})));
    let ex = a.sync(
        &app,
        vec![
            upsert("Note", &u, 1, json!({"v": "a3"})),
            upsert("Note", &u, 1, json!({"v": "a4"})),
        ],
    );
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 2);
    assert!(ex.changes().is_empty(), "no echo: {:?}", ex.changes());

    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 5);
    assert_eq!(e["data"], json!({"v": "a4"}));
    assert!(history(&app, &u).is_empty());
    // B receives only the latest state, once.
    let got = b.drain(&app);
    let got: Vec<_> = got
        .into_iter()
        .filter(|c| c["entity_uuid"] == json!(u))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["version"], 5);
    assert_eq!(got[0]["data"], json!({"v": "a4"}));
}

#[test]
fn an_edit_based_on_the_current_version_is_not_a_conflict() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    b.drain(&app);
    assert_eq!(b.version_of("Note", &u), 2);
    let ex = b.sync(&app, vec![upsert("Note", &u, 2, json!({"v": "b"}))]);
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0);
    assert_eq!(entity_state(&app, "Note", &u)["version"], 3);
    assert!(history(&app, &u).is_empty());
}

#[test]
fn insert_of_an_existing_entity_is_an_update_based_on_version_0() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    ok(&a.sync(&app, vec![upsert("Note", &u, 0, json!({"v": "a"}))]));
    // A inserting again is its own overwrite; B inserting the same uuid conflicts.
    let ex = a.sync(&app, vec![upsert("Note", &u, 0, json!({"v": "a2"}))]);
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0, "{}", ex.body);
    assert_eq!(entity_state(&app, "Note", &u)["version"], 2);
    let ex = b.sync(&app, vec![upsert("Note", &u, 0, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Note", &u, "server_wins", 2);
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    assert_eq!(back[0]["data"], json!({"v": "a2"}));
    let rows = history(&app, &u);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "server_wins:server",
        2,
    );
}

#[test]
fn an_update_of_an_unknown_entity_creates_it() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let ex = a.sync(&app, vec![change("UPDATE", "Note", &u, 0, json!({"v": 1}))]);
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 1);
    assert_eq!(ex.body["conflict_count"], 0);
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 1);
    assert_eq!(e["data"], json!({"v": 1}));
    let got = changes_for(&b.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["version"], 1);
}

#[test]
fn an_admin_write_conflicts_with_a_stale_node_edit() {
    let app = rules_app();
    let (_a, mut b, u) = both_at_v1(&app, "Doc", json!({"v": "base"}));
    let (s, body) = app.put(
        &format!("/api/sync/entities/Doc/{u}"),
        Some(ADMIN),
        &json!({"data": {"v": "admin"}}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 2);
    // Doc is client_wins: B's stale edit wins, the admin's version goes to history.
    let ex = b.sync(&app, vec![upsert("Doc", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Doc", &u, "client_wins", 2);
    assert_eq!(entity_state(&app, "Doc", &u)["data"], json!({"v": "b"}));
    let rows = history(&app, &u);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["serialized_data"], json!({"v": "admin"}));
    assert_eq!(rows[0]["conflict_resolution"], "client_wins:client");
    // The admin's write did not come from B: it is not B's own change.
    assert!(!changes_for(&ex, &u)
        .iter()
        .any(|c| c["data"] == json!({"v": "b"})));
}

// ---------------------------------------------------------------- deletes

#[test]
fn delete_wins_over_a_concurrent_update() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, delete("Note", &u, 1));
    let ex = b.sync(&app, vec![upsert("Note", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Note", &u, "delete_wins", 2);
    // The tombstone is sent to B again.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    assert_eq!(back[0]["operation"], "DELETE");
    assert_eq!(back[0]["version"], 2);
    assert_eq!(back[0]["data"], Value::Null);

    let (s, e) = app.entity("Note", &u);
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["deleted"], true, "{e}");
    assert_eq!(e["version"], 2);

    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "delete_wins:server",
        2,
    );
    assert_eq!(
        server_status(&app)["entities"],
        0,
        "the entity stays deleted"
    );
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
    assert_eq!(
        b.entities[&("Note".to_string(), u.clone())],
        (2, Value::Null)
    );

    // An INSERT of the deleted entity does not resurrect it either.
    let ex = b.sync(&app, vec![upsert("Note", &u, 0, json!({"v": "again"}))]);
    single_conflict(&ex, "Note", &u, "delete_wins", 2);
    assert_eq!(app.entity("Note", &u).1["deleted"], true);
    assert_eq!(history(&app, &u).len(), 2);
}

#[test]
fn resurrect_applies_an_update_of_a_deleted_entity() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Phoenix", json!({"v": "base"}));
    a_updates(&app, &mut a, delete("Phoenix", &u, 1));
    let ex = b.sync(&app, vec![upsert("Phoenix", &u, 1, json!({"v": "b"}))]);
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1);
    assert!(changes_for(&ex, &u).is_empty(), "{:?}", ex.changes());
    let e = entity_state(&app, "Phoenix", &u);
    assert_eq!(e["deleted"], false);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"v": "b"}));
    assert!(history(&app, &u).is_empty());
    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_ne!(got[0]["operation"], "DELETE");
    assert_eq!(got[0]["data"], json!({"v": "b"}));
    // Without the setting, the same sequence is delete_wins (see the test above).
}

#[test]
fn a_node_delete_wins_over_a_concurrent_server_change() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![delete("Note", &u, 1)]);
    let id = single_conflict(&ex, "Note", &u, "delete_wins", 2);
    assert!(
        changes_for(&ex, &u).is_empty(),
        "B holds the tombstone: {:?}",
        ex.changes()
    );
    let e = app.entity("Note", &u).1;
    assert_eq!(e["deleted"], true, "{e}");
    assert_eq!(e["version"], 3);
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &a.id,
        &json!({"v": "a"}),
        "delete_wins:client",
        2,
    );
    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["operation"], "DELETE");
    assert_eq!(got[0]["version"], 3);
}

#[test]
fn deleting_unknown_or_deleted_entities_is_a_no_op() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, delete("Note", &u, 1));
    let unknown = new_uuid();
    let ex = b.sync(
        &app,
        vec![delete("Note", &u, 1), delete("Note", &unknown, 0)],
    );
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 2, "{}", ex.body);
    assert_eq!(ex.body["conflict_count"], 0);
    assert_eq!(app.entity("Note", &u).1["version"], 2);
    assert_eq!(app.entity("Note", &unknown).0, 404);
    assert!(history(&app, &u).is_empty());
}

// ---------------------------------------------------------------- field rules

#[test]
fn done_wins_under_server_wins_and_reaches_everyone() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Task", json!({"status": "open", "title": "t"}));
    a_updates(
        &app,
        &mut a,
        upsert("Task", &u, 1, json!({"status": "open", "title": "A"})),
    );
    let ex = b.sync(
        &app,
        vec![upsert(
            "Task",
            &u,
            1,
            json!({"status": "done", "title": "B"}),
        )],
    );
    let id = single_conflict(&ex, "Task", &u, "server_wins", 2);
    let merged = json!({"status": "done", "title": "A"});
    // The merged state is a new version, sent to the loser as well.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    assert_eq!(back[0]["version"], 3);
    assert_eq!(back[0]["data"], merged);
    let e = entity_state(&app, "Task", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], merged);
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"status": "done", "title": "B"}),
        "server_wins:server",
        2,
    );
    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "A receives the merged version: {got:?}");
    assert_eq!(got[0]["version"], 3);
    assert_eq!(got[0]["data"], merged);

    // Outside a conflict a node may reopen the task.
    let ex = a.sync(
        &app,
        vec![upsert(
            "Task",
            &u,
            3,
            json!({"status": "open", "title": "A"}),
        )],
    );
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0);
    let e = entity_state(&app, "Task", &u);
    assert_eq!(e["version"], 4);
    assert_eq!(e["data"]["status"], "open");
    let got = changes_for(&b.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["data"]["status"], "open");
}

#[test]
fn done_wins_under_client_wins_keeps_the_servers_done() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "DoneDoc", json!({"status": "open", "title": "t"}));
    a_updates(
        &app,
        &mut a,
        upsert("DoneDoc", &u, 1, json!({"status": "done", "title": "A"})),
    );
    let ex = b.sync(
        &app,
        vec![upsert(
            "DoneDoc",
            &u,
            1,
            json!({"status": "open", "title": "B"}),
        )],
    );
    let id = single_conflict(&ex, "DoneDoc", &u, "client_wins", 2);
    let merged = json!({"status": "done", "title": "B"});
    let e = entity_state(&app, "DoneDoc", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], merged);
    // The merged state differs from what B sent: B receives it.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    assert_eq!(back[0]["data"], merged);
    assert_eq!(back[0]["version"], 3);
    let rows = history(&app, &u);
    assert_auto_row(
        &rows[0],
        &id,
        &a.id,
        &json!({"status": "done", "title": "A"}),
        "client_wins:client",
        2,
    );
    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["data"], merged);
}

#[test]
fn done_wins_does_nothing_when_neither_side_is_done() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Task", json!({"status": "open"}));
    a_updates(
        &app,
        &mut a,
        upsert("Task", &u, 1, json!({"status": "doing"})),
    );
    let ex = b.sync(
        &app,
        vec![upsert("Task", &u, 1, json!({"status": "blocked"}))],
    );
    single_conflict(&ex, "Task", &u, "server_wins", 2);
    let e = entity_state(&app, "Task", &u);
    assert_eq!(e["version"], 2, "no merged version: {e}");
    assert_eq!(e["data"], json!({"status": "doing"}));
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
}

#[test]
fn immutable_types_reject_node_changes_but_accept_admin_writes() {
    let app = rules_app();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let path = format!("/api/sync/entities/Setting/{u}");
    let (s, body) = app.put(&path, Some(ADMIN), &json!({"data": {"k": 1}}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["data"], json!({"k": 1}));
    for n in [&mut a, &mut b] {
        let got = n.drain(&app);
        assert!(got
            .iter()
            .any(|c| c["entity_uuid"] == json!(u) && c["data"] == json!({"k": 1})));
    }

    // Node changes are rejected one by one; the rest of the packet applies.
    let bad = upsert("Setting", &u, 1, json!({"k": 2}));
    let bad_id = bad["change_id"].clone();
    let fresh = new_uuid();
    let bad_insert = upsert("Setting", &fresh, 0, json!({"k": 9}));
    let bad_delete = delete("Setting", &u, 1);
    let fine = new_uuid();
    let ex = a.sync(
        &app,
        vec![
            bad,
            bad_insert,
            bad_delete,
            upsert("Note", &fine, 0, json!({"n": 1})),
        ],
    );
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 3, "{}", ex.body);
    assert_eq!(ex.body["conflict_count"], 0);
    let errors = ex.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0]["change_id"], bad_id);
    for e in errors {
        assert_eq!(e["error"], "invalid_change", "{e}");
        assert_eq!(e["entity_type"], "Setting");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    let e = entity_state(&app, "Setting", &u);
    assert_eq!(e["version"], 1);
    assert_eq!(e["data"], json!({"k": 1}));
    assert_eq!(e["deleted"], false);
    assert_eq!(app.entity("Setting", &fresh).0, 404);
    assert_eq!(entity_state(&app, "Note", &fine)["version"], 1);
    assert!(
        history(&app, &u).is_empty(),
        "a rejection is not a conflict"
    );

    // The admin changes it, and every node receives the new version.
    let (s, body) = app.put(&path, Some(ADMIN), &json!({"data": {"k": 3}}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 2);
    for n in [&mut a, &mut b] {
        let got = n.drain(&app);
        let got: Vec<_> = got
            .into_iter()
            .filter(|c| c["entity_uuid"] == json!(u))
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["version"], 2);
        assert_eq!(got[0]["data"], json!({"k": 3}));
    }
    // A node token cannot use the admin write.
    let (s, _) = app.put(&path, Some(&a.token), &json!({"data": {"k": 4}}));
    assert_eq!(s, 403);
    let (s, body) = app.delete(&path, Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    for n in [&mut a, &mut b] {
        let got = n.drain(&app);
        let got: Vec<_> = got
            .into_iter()
            .filter(|c| c["entity_uuid"] == json!(u))
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["operation"], "DELETE");
        assert_eq!(got[0]["version"], 3);
    }
}

// ---------------------------------------------------------------- repeated edits, bad bases

#[test]
fn a_node_that_keeps_editing_after_losing_conflicts_each_time() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let mut ids = Vec::new();
    for i in 0..3 {
        // Still based on version 1: the node has not taken the server state.
        let ex = b.sync(
            &app,
            vec![upsert("Note", &u, 1, json!({"v": format!("b{i}")}))],
        );
        ids.push(single_conflict(&ex, "Note", &u, "server_wins", 2));
        let back = changes_for(&ex, &u);
        assert_eq!(
            back.len(),
            1,
            "each loss resends the server state: {:?}",
            ex.changes()
        );
        assert_eq!(back[0]["data"], json!({"v": "a"}));
    }
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 3);
    // Newest first.
    for (i, row) in rows.iter().rev().enumerate() {
        assert_auto_row(
            row,
            &ids[i],
            &b.id,
            &json!({"v": format!("b{i}")}),
            "server_wins:server",
            2,
        );
    }
    assert_eq!(entity_state(&app, "Note", &u)["version"], 2);

    // Once it takes the server state, its edit applies normally.
    let ex = b.sync(&app, vec![upsert("Note", &u, 2, json!({"v": "b-final"}))]);
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0);
    assert_eq!(
        entity_state(&app, "Note", &u)["data"],
        json!({"v": "b-final"})
    );
    assert_eq!(history(&app, &u).len(), 3);
}

#[test]
fn a_base_version_ahead_of_the_server_is_rejected_per_change() {
    let app = TestApp::spawn();
    let (_a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    let bad = upsert("Note", &u, 5, json!({"v": "future"}));
    let bad_id = bad["change_id"].clone();
    let bad_delete = delete("Note", &u, 2);
    let other = new_uuid();
    let ex = b.sync(
        &app,
        vec![bad, bad_delete, upsert("Note", &other, 0, json!({"v": 1}))],
    );
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 2, "{}", ex.body);
    let errors = ex.body["errors"].as_array().unwrap();
    assert_eq!(errors[0]["change_id"], bad_id);
    assert_eq!(errors[0]["error"], "invalid_change");
    assert_eq!(errors[0]["entity_uuid"], json!(u));
    assert_eq!(errors[1]["error"], "invalid_change");
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 1);
    assert_eq!(e["data"], json!({"v": "base"}));
    assert_eq!(e["deleted"], false);
    assert!(history(&app, &u).is_empty());
    assert_eq!(entity_state(&app, "Note", &other)["version"], 1);
}

// ---------------------------------------------------------------- admin resolution

/// A manual conflict on a Ticket: A's version 2 is the server state, B's lost and is pending.
/// Both nodes have acknowledged everything afterwards.
fn manual_conflict(app: &TestApp) -> (TestNode, TestNode, String, String) {
    let (mut a, mut b, u) = both_at_v1(app, "Ticket", json!({"v": "base"}));
    a_updates(app, &mut a, upsert("Ticket", &u, 1, json!({"v": "a"})));
    let ex = b.sync(app, vec![upsert("Ticket", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Ticket", &u, "manual", 2);
    a.drain(app);
    b.drain(app);
    a.sync(app, vec![]);
    b.sync(app, vec![]);
    (a, b, u, id)
}

fn resolve(app: &TestApp, id: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    app.post(&format!("/api/sync/conflicts/{id}/resolve"), token, body)
}

fn assert_resolved_by_admin(app: &TestApp, u: &str, id: &str) {
    let rows = history(app, u);
    let row = rows.iter().find(|r| r["id"] == id).expect("row");
    assert_eq!(row["resolved_by"], "admin", "{row}");
    assert!(
        row["resolved_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{row}"
    );
    assert_eq!(row["conflict_resolution"], "manual:admin", "{row}");
    // The stored losing version is kept.
    assert_eq!(row["serialized_data"], json!({"v": "b"}));
    assert!(app.conflicts("?unresolved=true").is_empty());
}

/// Both nodes receive exactly `version` with `data` for the entity.
fn both_receive(app: &TestApp, nodes: [&mut TestNode; 2], u: &str, version: u64, data: &Value) {
    for n in nodes {
        let got: Vec<_> = n
            .drain(app)
            .into_iter()
            .filter(|c| c["entity_uuid"] == json!(u))
            .collect();
        assert_eq!(
            got.len(),
            1,
            "node {} receives the resolution: {got:?}",
            n.code
        );
        assert_eq!(got[0]["version"], version);
        assert_eq!(&got[0]["data"], data);
    }
}

#[test]
fn resolving_with_new_data_is_a_new_version_for_every_node() {
    let app = rules_app();
    let (mut a, mut b, u, id) = manual_conflict(&app);
    assert_eq!(app.node_status(&b)["unresolved_conflicts"], 1);
    let merged = json!({"v": "merged"});
    let (s, body) = resolve(&app, &id, Some(ADMIN), &json!({"data": merged}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["entity_type"], "Ticket");
    assert_eq!(body["entity_uuid"], json!(u));
    assert_eq!(body["version"], 3);
    assert_eq!(body["data"], merged);
    let e = entity_state(&app, "Ticket", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], merged);
    assert_resolved_by_admin(&app, &u, &id);
    assert_eq!(app.node_status(&b)["unresolved_conflicts"], 0);
    assert_eq!(server_status(&app)["unresolved_conflicts"], 0);
    both_receive(&app, [&mut a, &mut b], &u, 3, &merged);

    // Resolving again: 409, and nothing changes.
    let (s, body) = resolve(&app, &id, Some(ADMIN), &json!({"data": {"v": "other"}}));
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"], "already_resolved");
    assert_eq!(entity_state(&app, "Ticket", &u)["version"], 3);
}

#[test]
fn resolving_with_the_history_version_makes_it_the_new_version() {
    let app = rules_app();
    let (mut a, mut b, u, id) = manual_conflict(&app);
    let (s, body) = resolve(&app, &id, Some(ADMIN), &json!({"use": "history"}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 3);
    assert_eq!(body["data"], json!({"v": "b"}));
    assert_eq!(entity_state(&app, "Ticket", &u)["data"], json!({"v": "b"}));
    assert_resolved_by_admin(&app, &u, &id);
    // B authored that data once, but the resolution is a new server version: B gets it too.
    both_receive(&app, [&mut a, &mut b], &u, 3, &json!({"v": "b"}));
    let (s, body) = resolve(&app, &id, Some(ADMIN), &json!({"use": "history"}));
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"], "already_resolved");
}

#[test]
fn a_resolution_supersedes_an_unacknowledged_conflict_answer() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Ticket", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Ticket", &u, 1, json!({"v": "a"})));
    // B gets the server state back but does not acknowledge it before the admin resolves.
    let ex = b.sync(&app, vec![upsert("Ticket", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Ticket", &u, "manual", 2);
    let (s, body) = resolve(&app, &id, Some(ADMIN), &json!({"data": {"v": "final"}}));
    assert_eq!(s, 200, "{body}");
    let got = changes_for(&b.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "only the newest state: {got:?}");
    assert_eq!(got[0]["version"], 3);
    assert_eq!(got[0]["data"], json!({"v": "final"}));
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
}

/// Documented behaviour: `{"use": "server"}` keeps the server state as it is — no new version
/// (every node already has it or has it queued) — and marks the row resolved.
#[test]
fn resolving_with_the_server_state_keeps_it_and_marks_the_row_resolved() {
    let app = rules_app();
    let (mut a, mut b, u, id) = manual_conflict(&app);
    let (s, body) = resolve(&app, &id, Some(ADMIN), &json!({"use": "server"}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["entity_type"], "Ticket");
    assert_eq!(body["entity_uuid"], json!(u));
    assert_eq!(body["version"], 2);
    assert_eq!(body["data"], json!({"v": "a"}));
    let e = entity_state(&app, "Ticket", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));
    assert_resolved_by_admin(&app, &u, &id);
    // No new version: neither node receives anything; B still holds the state it was sent.
    for n in [&mut a, &mut b] {
        assert!(changes_for(&n.sync(&app, vec![]), &u).is_empty());
    }
    assert_eq!(
        b.entities[&("Ticket".to_string(), u.clone())],
        (2, json!({"v": "a"}))
    );
    let (s, _) = resolve(&app, &id, Some(ADMIN), &json!({"use": "server"}));
    assert_eq!(s, 409);
}

#[test]
fn resolve_rejects_bad_requests_and_changes_nothing() {
    let app = rules_app();
    let (a, _b, u, id) = manual_conflict(&app);
    let path = format!("/api/sync/conflicts/{id}/resolve");

    let (s, body) = app.post_raw(&path, Some(ADMIN), b"{not json");
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    for bad in [
        json!({}),
        json!({"data": 5}),
        json!({"data": [1, 2]}),
        json!({"use": "both"}),
        json!({"data": {"v": 1}, "use": "server"}),
        json!({"other": true}),
    ] {
        let (s, body) = resolve(&app, &id, Some(ADMIN), &bad);
        assert_eq!(s, 422, "{bad} → {body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    let (s, body) = resolve(&app, &id, Some(&a.token), &json!({"use": "history"}));
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (s, body) = resolve(&app, &id, None, &json!({"use": "history"}));
    assert_eq!(s, 401, "{body}");
    let (s, body) = resolve(&app, &new_uuid(), Some(ADMIN), &json!({"use": "history"}));
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"], "not_found");

    // Nothing of that changed anything.
    let e = entity_state(&app, "Ticket", &u);
    assert_eq!(e["version"], 2);
    let unresolved = app.conflicts("?unresolved=true");
    assert_eq!(unresolved.len(), 1);
    assert_eq!(unresolved[0]["id"], id.as_str());
    assert_eq!(unresolved[0]["resolved_by"], Value::Null);
}

#[test]
fn automatic_rows_cannot_be_resolved() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Note", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Note", &u, "server_wins", 2);
    for body in [
        json!({"use": "history"}),
        json!({"data": {"v": "x"}}),
        json!({"use": "server"}),
    ] {
        let (s, resp) = resolve(&app, &id, Some(ADMIN), &body);
        assert_eq!(s, 409, "{resp}");
        assert_eq!(resp["error"], "already_resolved");
    }
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));
    let row = &history(&app, &u)[0];
    assert_eq!(row["resolved_by"], "auto");
    assert_eq!(row["conflict_resolution"], "server_wins:server");
}

// ---------------------------------------------------------------- listing

/// (conflict id, node that met it, entity type, entity uuid, manual?)
type ListedRow = (String, String, String, String, bool);

struct Listed {
    app: TestApp,
    a: TestNode,
    b: TestNode,
    c: TestNode,
    u1: String,
    u2: String,
    /// Conflict ids in the order they happened.
    ids: Vec<String>,
    rows: Vec<ListedRow>,
}

/// Five conflicts: B and C on a Note, B twice and C once on a Ticket (manual).
fn listed() -> Listed {
    let app = rules_app();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let mut c = app.register("C");
    let u1 = new_uuid();
    let u2 = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Note", &u1, 0, json!({"v": 0})),
            upsert("Ticket", &u2, 0, json!({"v": 0})),
        ],
    ));
    b.drain(&app);
    c.drain(&app);
    a_updates(&app, &mut a, upsert("Note", &u1, 1, json!({"v": "a"})));
    let ex = a.sync(&app, vec![upsert("Ticket", &u2, 1, json!({"v": "a"}))]);
    ok(&ex);
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    let steps: [(&str, &str, bool); 5] = [
        ("B", "Note", false),
        ("C", "Ticket", true),
        ("B", "Ticket", true),
        ("C", "Note", false),
        ("B", "Ticket", true),
    ];
    for (i, (who, t, manual)) in steps.into_iter().enumerate() {
        let u = if t == "Note" { &u1 } else { &u2 };
        let node = if who == "B" { &mut b } else { &mut c };
        let ex = node.sync(&app, vec![upsert(t, u, 1, json!({"v": i}))]);
        let res = if manual { "manual" } else { "server_wins" };
        let id = single_conflict(&ex, t, u, res, 2);
        ids.push(id.clone());
        rows.push((id, node.id.clone(), t.to_string(), u.clone(), manual));
    }
    Listed {
        app,
        a,
        b,
        c,
        u1,
        u2,
        ids,
        rows,
    }
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn listing_filters_and_orders_newest_first() {
    let l = listed();
    let app = &l.app;
    let all = app.conflicts("");
    let mut newest_first = l.ids.clone();
    newest_first.reverse();
    assert_eq!(ids_of(&all), newest_first);
    for r in &all {
        for f in [
            "id",
            "entity_type",
            "entity_uuid",
            "source_node_id",
            "arrival_time",
            "serialized_data",
            "conflict_resolution",
            "server_version",
            "resolved_at",
            "resolved_by",
        ] {
            assert!(r.get(f).is_some(), "row lacks {f}: {r}");
        }
    }

    let expect = |pred: &dyn Fn(&ListedRow) -> bool| -> Vec<String> {
        l.rows
            .iter()
            .rev()
            .filter(|r| pred(r))
            .map(|r| r.0.clone())
            .collect()
    };
    assert_eq!(
        ids_of(&app.conflicts("?entity_type=Ticket")),
        expect(&|r| r.2 == "Ticket")
    );
    assert_eq!(
        ids_of(&app.conflicts("?entity_type=Note")),
        expect(&|r| r.2 == "Note")
    );
    assert!(app.conflicts("?entity_type=Nothing").is_empty());
    assert_eq!(
        ids_of(&app.conflicts(&format!("?entity_uuid={}", l.u1))),
        expect(&|r| r.3 == l.u1)
    );
    assert_eq!(
        ids_of(&app.conflicts(&format!("?node_id={}", l.b.id))),
        expect(&|r| r.1 == l.b.id)
    );
    assert_eq!(
        ids_of(&app.conflicts(&format!("?node_id={}", l.c.id))),
        expect(&|r| r.1 == l.c.id)
    );
    assert!(app.conflicts(&format!("?node_id={}", l.a.id)).is_empty());
    assert_eq!(ids_of(&app.conflicts("?unresolved=true")), expect(&|r| r.4));
    assert_eq!(
        ids_of(&app.conflicts(&format!(
            "?unresolved=true&node_id={}&entity_uuid={}",
            l.b.id, l.u2
        ))),
        expect(&|r| r.4 && r.1 == l.b.id && r.3 == l.u2)
    );
    assert_eq!(
        ids_of(&app.conflicts("?limit=2")),
        newest_first[..2].to_vec()
    );

    // Unresolved counts per node and for the hub.
    assert_eq!(app.node_status(&l.b)["unresolved_conflicts"], 2);
    assert_eq!(app.node_status(&l.c)["unresolved_conflicts"], 1);
    assert_eq!(app.node_status(&l.a)["unresolved_conflicts"], 0);
    assert_eq!(server_status(app)["unresolved_conflicts"], 3);

    // Bad parameters are 422, not a silent default.
    for q in [
        "?limit=0",
        "?limit=abc",
        "?unresolved=maybe",
        "?before=not-an-id",
    ] {
        let (s, body) = app.get(&format!("/api/sync/conflicts{q}"), Some(ADMIN));
        assert_eq!(s, 422, "{q}: {body}");
    }
}

#[test]
fn listing_pages_with_before_without_overlap() {
    let l = listed();
    let app = &l.app;
    let all = ids_of(&app.conflicts(""));
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = ids_of(&app.conflicts(&query));
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        for id in &page {
            assert!(!paged.contains(id), "overlap at {id}");
        }
        paged.extend(page.clone());
        query = format!("?limit=2&before={}", page.last().unwrap());
    }
    assert_eq!(paged, all);
    // Paging combines with filters.
    let tickets = ids_of(&app.conflicts("?entity_type=Ticket"));
    let first = ids_of(&app.conflicts("?entity_type=Ticket&limit=1"));
    let rest = ids_of(&app.conflicts(&format!("?entity_type=Ticket&before={}", first[0])));
    assert_eq!([first, rest].concat(), tickets);
}

#[test]
fn a_node_lists_only_its_own_conflicts() {
    let l = listed();
    let app = &l.app;
    let (s, body) = app.get(
        &format!("/api/sync/conflicts?node_id={}", l.b.id),
        Some(&l.b.token),
    );
    assert_eq!(s, 200, "{body}");
    let mine = ids_of(body["conflicts"].as_array().unwrap());
    let expected: Vec<String> = l
        .rows
        .iter()
        .rev()
        .filter(|r| r.1 == l.b.id)
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(mine, expected);
    assert_eq!(mine.len(), 3);

    let (s, body) = app.get(
        &format!("/api/sync/conflicts?node_id={}&unresolved=true", l.b.id),
        Some(&l.b.token),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conflicts"].as_array().unwrap().len(), 2);

    let (s, body) = app.get("/api/sync/conflicts", Some(&l.b.token));
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (s, body) = app.get(
        &format!("/api/sync/conflicts?node_id={}", l.c.id),
        Some(&l.b.token),
    );
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (s, _) = app.get("/api/sync/conflicts", None);
    assert_eq!(s, 401);
    let (s, _) = app.get("/api/sync/conflicts", Some("not-a-token"));
    assert_eq!(s, 401);
    // Another node's status is not readable either.
    let (s, _) = app.get(&format!("/api/sync/status/{}", l.c.id), Some(&l.b.token));
    assert_eq!(s, 403);
}

// ---------------------------------------------------------------- no silent loss

#[test]
fn no_version_any_node_sent_is_lost_silently() {
    let app = rules_app();
    let mut nodes = [app.register("A"), app.register("B"), app.register("C")];
    // Entities created by the admin (not node versions), two per strategy.
    let types = ["Note", "Doc", "Stamp", "Ticket", "Task"];
    let mut entities = Vec::new();
    for t in types {
        for _ in 0..2 {
            let u = new_uuid();
            let (s, body) = app.put(
                &format!("/api/sync/entities/{t}/{u}"),
                Some(ADMIN),
                &json!({"data": {"v": "admin", "status": "open"}}),
            );
            assert_eq!(s, 200, "{body}");
            entities.push((t.to_string(), u));
        }
    }
    for n in nodes.iter_mut() {
        n.drain(&app);
    }
    // Every node edits every entity based on version 1; one node deletes some.
    let mut sent: Vec<(String, String, Value)> = Vec::new();
    let mut conflict_ids = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        let mut changes = Vec::new();
        for (k, (t, u)) in entities.iter().enumerate() {
            if i == 2 && k % 3 == 0 {
                changes.push(delete(t, u, 1));
                continue;
            }
            let status = if (i + k) % 2 == 0 { "done" } else { "open" };
            let data = json!({"v": format!("{}-{k}", n.code), "status": status});
            let mut c = upsert(t, u, 1, data.clone());
            // Timestamps in arrival order for some, reversed for others.
            let minute = if k % 2 == 0 { i } else { 5 - i };
            c["updated_at"] = json!(format!("2030-01-01T10:0{minute}:00Z"));
            changes.push(c);
            sent.push((t.clone(), u.clone(), data));
        }
        let ex = n.sync(&app, changes);
        ok(&ex);
        assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
        for c in ex.body["conflicts"].as_array().unwrap() {
            conflict_ids.push(c["conflict_id"].as_str().unwrap().to_string());
        }
    }
    // The first node's edits were normal; every later one conflicted.
    assert_eq!(conflict_ids.len(), 2 * entities.len());
    let rows = app.conflicts("?limit=1000");
    assert_eq!(
        rows.len(),
        conflict_ids.len(),
        "exactly one history row per conflict"
    );
    let mut row_ids = ids_of(&rows);
    row_ids.sort();
    let mut sorted = conflict_ids.clone();
    sorted.sort();
    assert_eq!(row_ids, sorted);

    for (t, u, data) in &sent {
        let (s, e) = app.entity(t, u);
        assert_eq!(s, 200);
        // A "done wins" merge replaces the winner's version by a new one that keeps its other
        // fields: for Task, that merged version stands for it.
        let same = |v: &Value| v == data || (t == "Task" && v["v"] == data["v"]);
        let is_state = e["deleted"] == false && same(&e["data"]);
        let in_history = rows
            .iter()
            .any(|r| r["entity_uuid"] == json!(u) && same(&r["serialized_data"]));
        assert!(
            is_state || in_history,
            "{t}/{u}: {data} was lost (state {e})"
        );
    }
}
