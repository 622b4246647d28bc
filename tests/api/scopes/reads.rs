//! Reads with a node token are filtered to its scopes (PROTOCOL §10): status and conflicts.

use super::*;

#[test]
fn status_counts_only_the_nodes_scopes_in_every_view() {
    let app = scoped_app();
    let a = node_with(&app, "A", &["fam-1"], None);
    for _ in 0..3 {
        admin_put(&app, "Doc", &new_uuid(), json!({"tenant_id": "fam-1"}));
    }
    for _ in 0..5 {
        admin_put(&app, "Doc", &new_uuid(), json!({"tenant_id": "fam-2"}));
    }
    admin_put(&app, "Country", &new_uuid(), json!({"name": "FR"}));
    let (s, own) = app.get(&format!("/api/sync/status/{}", a.id), Some(&a.token));
    assert_eq!(s, 200);
    assert_eq!(own["pending_changes"], 4, "{own}");
    let (_, stats) = app.get("/api/sync/status", Some(ADMIN));
    assert_eq!(
        stats["pending_counts"][&a.id]["pending_changes"], 4,
        "{stats}"
    );
    let (_, list) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(list["nodes"][0]["pending_changes"], 4, "{list}");
}

#[test]
fn a_node_sees_conflict_rows_only_while_the_entity_is_in_its_scopes() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let x = new_uuid();
    admin_put(&app, "Memo", &x, json!({"tenant_id": "fam-1", "v": 1}));
    a.drain(&app);
    admin_put(&app, "Memo", &x, json!({"tenant_id": "fam-1", "v": 2}));
    let ex = a.sync(
        &app,
        vec![upsert(
            "Memo",
            &x,
            1,
            json!({"tenant_id": "fam-1", "v": "A"}),
        )],
    );
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    let mine = format!("/api/sync/conflicts?node_id={}", a.id);
    let status = format!("/api/sync/status/{}", a.id);
    let (s, rows) = app.get(&mine, Some(&a.token));
    assert_eq!(s, 200, "{rows}");
    assert_eq!(rows["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get(&status, Some(&a.token)).1["unresolved_conflicts"],
        1
    );

    // The entity moves to another tenant: the row is no longer A's to read.
    admin_put(&app, "Memo", &x, json!({"tenant_id": "fam-2", "v": 3}));
    let (s, rows) = app.get(&mine, Some(&a.token));
    assert_eq!(s, 200);
    assert_eq!(rows["conflicts"], json!([]), "{rows}");
    assert_eq!(
        app.get(&status, Some(&a.token)).1["unresolved_conflicts"],
        0
    );
    // The admin still sees everything.
    assert_eq!(app.conflicts("").len(), 1);
    assert_eq!(app.get(&status, Some(ADMIN)).1["unresolved_conflicts"], 1);
    // Back in A's scope, the row is A's again.
    admin_put(&app, "Memo", &x, json!({"tenant_id": "fam-1", "v": 4}));
    assert_eq!(
        app.get(&mine, Some(&a.token)).1["conflicts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn entity_listings_stay_admin_only_and_one_entity_is_read_within_scopes() {
    let app = scoped_app();
    let a = node_with(&app, "A", &["fam-1"], None);
    let x = new_uuid();
    let y = new_uuid();
    admin_put(&app, "Doc", &x, json!({"tenant_id": "fam-1"}));
    admin_put(&app, "Doc", &y, json!({"tenant_id": "fam-2"}));
    for path in [
        "/api/sync/entities?entity_type=Doc".to_string(),
        "/api/sync/entity-types".to_string(),
    ] {
        let (s, body) = app.get(&path, Some(&a.token));
        assert_eq!(
            (s, body["error"].as_str()),
            (403, Some("forbidden")),
            "{path}: {body}"
        );
    }
    // One entity with a node token is that node's read (PROTOCOL §11.3): its own scope only;
    // another tenant's entity is exactly as missing as one that does not exist.
    let (s, body) = app.get(&format!("/api/sync/entities/Doc/{x}"), Some(&a.token));
    assert_eq!(
        (s, &body["data"]["tenant_id"]),
        (200, &json!("fam-1")),
        "{body}"
    );
    let (s, other) = app.get(&format!("/api/sync/entities/Doc/{y}"), Some(&a.token));
    let missing = new_uuid();
    let (s2, none) = app.get(&format!("/api/sync/entities/Doc/{missing}"), Some(&a.token));
    assert_eq!((s, s2), (404, 404), "{other} {none}");
    assert_eq!(
        other["message"].as_str().unwrap().replace(&y, "ID"),
        none["message"].as_str().unwrap().replace(&missing, "ID")
    );
}
