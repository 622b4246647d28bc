//! Admin resolution.

use super::*;

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
