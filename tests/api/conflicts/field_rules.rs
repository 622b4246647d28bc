//! Field rules.

use super::*;

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
