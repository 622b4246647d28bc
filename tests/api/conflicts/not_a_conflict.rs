//! What is not a conflict.

use super::*;

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
