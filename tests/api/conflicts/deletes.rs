//! Deletes.

use super::*;

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
