//! Delta sync, `POST /api/sync/delta` (PROTOCOL §11.2): partial updates merged by field,
//! optimistic locking, the conflict rules, atomic batches, limits, `server_changes` paging and
//! scopes, through HTTP.

use crate::helpers::*;
use crate::scopes::{admin_put, node_with, scoped_app};
use serde_json::{json, Value};

/// Task: done wins. Note: timestamp_wins.
const RULES: &str = r#"
[conflicts.types.Task]
priority_values = { status = "done" }

[conflicts.types.Note]
strategy = "timestamp_wins"
"#;

fn delta(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, answer) = app.post("/api/sync/delta", Some(token), &body);
    assert_eq!(s, 200, "{body}: {answer}");
    answer
}

fn change(t: &str, id: &str, action: &str, data: Value, version: Option<u64>) -> Value {
    let mut c = json!({"entity_type": t, "entity_id": id, "action": action, "data": data});
    if let Some(v) = version {
        c["version"] = json!(v);
    }
    c
}

/// `(type, id, action)` of `server_changes`.
fn server_ops(answer: &Value) -> Vec<(String, String, String)> {
    answer["server_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["entity_type"].as_str().unwrap().to_string(),
                c["entity_id"].as_str().unwrap().to_string(),
                c["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn data_of(app: &TestApp, t: &str, id: &str) -> (u16, Value) {
    let (s, e) = app.entity(t, id);
    (s, e["data"].clone())
}

#[test]
fn a_partial_update_merges_with_a_server_edit_without_conflict() {
    let app = TestApp::spawn_with(RULES, &[]);
    let phone = app.register("PHONE");
    let t = new_uuid();
    let a = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "device_id": "phone-1", "changes": [
            change("Task", &t, "create", json!({"title": "Roof", "status": "open"}), None)
        ]}),
    );
    assert_eq!(a["success"], json!(true), "{a}");
    assert_eq!(a["applied_count"], json!(1));
    assert_eq!(a["error_count"], json!(0));
    // The client's own create is not sent back to it.
    assert!(server_ops(&a).is_empty(), "{a}");
    let last = a["last_sync_at"].as_str().unwrap().to_string();

    // The server changes the title; the client marks the task done, based on version 1.
    admin_put(
        &app,
        "Task",
        &t,
        json!({"title": "Roof repair", "status": "open"}),
    );
    let b = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": last, "changes": [
            change("Task", &t, "update", json!({"status": "done"}), Some(1))
        ]}),
    );
    assert_eq!(b["success"], json!(true), "{b}");
    assert_eq!(b["conflicts"], json!([]), "no conflict at all: {b}");
    let (_, data) = data_of(&app, "Task", &t);
    assert_eq!(data, json!({"title": "Roof repair", "status": "done"}));
    // The merged state differs from what the client sent: it comes back.
    let sc = &b["server_changes"][0];
    assert_eq!(sc["entity_id"], json!(t));
    assert_eq!(sc["action"], json!("update"));
    assert_eq!(
        sc["data"],
        json!({"title": "Roof repair", "status": "done"})
    );
    assert_eq!(sc["version"], json!(3));
    assert!(app.conflicts(&format!("?entity_uuid={t}")).is_empty());
}

#[test]
fn a_stale_version_under_server_wins_is_a_conflict_with_server_data_and_history() {
    let app = TestApp::spawn();
    let phone = app.register("PHONE");
    let e = new_uuid();
    admin_put(&app, "Estimate", &e, json!({"name": "A", "value": 1}));
    admin_put(&app, "Estimate", &e, json!({"name": "B", "value": 1}));
    let a = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": [
            change("Estimate", &e, "update", json!({"name": "C"}), Some(1))
        ]}),
    );
    assert_eq!(a["success"], json!(false), "the change lost outright: {a}");
    assert_eq!(a["applied_count"], json!(1), "a conflict is processed");
    let c = &a["conflicts"][0];
    assert_eq!(c["entity_id"], json!(e));
    assert_eq!(c["conflict_reason"], json!("version_mismatch"));
    assert_eq!(c["resolution"], json!("server_wins:server"));
    assert_eq!(c["client_version"], json!(1));
    assert_eq!(c["server_version"], json!(2));
    assert_eq!(c["server_data"], json!({"name": "B", "value": 1}));
    let rows = app.conflicts(&format!("?entity_uuid={e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["serialized_data"]["name"], json!("C"));
    assert_eq!(rows[0]["id"], c["conflict_id"]);
    let (_, data) = data_of(&app, "Estimate", &e);
    assert_eq!(data["name"], json!("B"));
}

#[test]
fn done_wins_and_the_change_counts_as_success() {
    let app = TestApp::spawn_with(RULES, &[]);
    let phone = app.register("PHONE");
    let t = new_uuid();
    admin_put(&app, "Task", &t, json!({"title": "x", "status": "open"}));
    admin_put(&app, "Task", &t, json!({"title": "x", "status": "blocked"}));
    let a = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": [
            change("Task", &t, "update", json!({"status": "done"}), Some(1))
        ]}),
    );
    assert_eq!(a["success"], json!(true), "done won: {a}");
    let c = &a["conflicts"][0];
    assert_eq!(c["server_data"]["status"], json!("done"), "{a}");
    let (_, data) = data_of(&app, "Task", &t);
    assert_eq!(data["status"], json!("done"));
    assert_eq!(app.conflicts(&format!("?entity_uuid={t}")).len(), 1);
}

#[test]
fn delete_wins_over_a_stale_update() {
    let app = TestApp::spawn();
    let phone = app.register("PHONE");
    let e = new_uuid();
    admin_put(&app, "Estimate", &e, json!({"name": "A"}));
    let (s, _) = app.delete(&format!("/api/sync/entities/Estimate/{e}"), Some(ADMIN));
    assert_eq!(s, 200);
    let a = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": [
            change("Estimate", &e, "update", json!({"name": "B"}), Some(1))
        ]}),
    );
    assert_eq!(a["success"], json!(false), "{a}");
    let c = &a["conflicts"][0];
    assert_eq!(c["conflict_reason"], json!("deleted_on_server"));
    assert_eq!(c["resolution"], json!("delete_wins:server"));
    assert_eq!(c["server_data"], Value::Null);
    assert_eq!(app.conflicts(&format!("?entity_uuid={e}")).len(), 1);
    assert_eq!(
        app.entity("Estimate", &e).1["deleted"],
        json!(true),
        "still deleted"
    );

    // A client delete of an entity changed meanwhile deletes it (delete wins, client side).
    let f = new_uuid();
    admin_put(&app, "Estimate", &f, json!({"name": "A"}));
    admin_put(&app, "Estimate", &f, json!({"name": "A2"}));
    let b = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": [
            change("Estimate", &f, "delete", Value::Null, Some(1))
        ]}),
    );
    assert_eq!(b["success"], json!(true), "{b}");
    assert_eq!(b["conflicts"][0]["resolution"], json!("delete_wins:client"));
    assert_eq!(app.entity("Estimate", &f).1["deleted"], json!(true));
}

#[test]
fn timestamp_wins_by_client_timestamp() {
    let app = TestApp::spawn_with(RULES, &[]);
    let phone = app.register("PHONE");
    let (n1, n2) = (new_uuid(), new_uuid());
    for n in [&n1, &n2] {
        admin_put(&app, "Note", n, json!({"text": "v1"}));
        admin_put(&app, "Note", n, json!({"text": "server"}));
    }
    let later = now();
    let mut newer = change("Note", &n1, "update", json!({"text": "client"}), Some(1));
    newer["client_timestamp"] = json!(later);
    let mut older = change("Note", &n2, "update", json!({"text": "client"}), Some(1));
    older["client_timestamp"] = json!("2020-01-01T00:00:00Z");
    let a = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": [newer]}),
    );
    assert_eq!(a["success"], json!(true), "{a}");
    assert_eq!(
        a["conflicts"][0]["resolution"],
        json!("timestamp_wins:client")
    );
    assert_eq!(data_of(&app, "Note", &n1).1["text"], json!("client"));
    let b = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": [older]}),
    );
    assert_eq!(b["success"], json!(false), "{b}");
    assert_eq!(
        b["conflicts"][0]["resolution"],
        json!("timestamp_wins:server")
    );
    assert_eq!(data_of(&app, "Note", &n2).1["text"], json!("server"));
    assert_eq!(app.conflicts(&format!("?entity_uuid={n2}")).len(), 1);
}

#[test]
fn atomic_applies_all_or_nothing_and_names_the_rejected_change() {
    let app = TestApp::spawn();
    let phone = app.register("PHONE");
    let (a, b) = (new_uuid(), new_uuid());
    let body = |atomic: bool| {
        json!({"last_sync_at": null, "atomic": atomic, "changes": [
            change("Estimate", &a, "create", json!({"name": "ok"}), None),
            change("1bad", &b, "create", json!({"name": "bad"}), None),
        ]})
    };
    let r = delta(&app, &phone.token, body(true));
    assert_eq!(r["success"], json!(false), "{r}");
    assert_eq!(r["applied_count"], json!(0));
    assert_eq!(r["error_count"], json!(1));
    assert_eq!(r["errors"][0]["index"], json!(1));
    assert_eq!(r["errors"][0]["entity_type"], json!("1bad"));
    assert_eq!(r["errors"][0]["reason"], json!("invalid_entity_type"));
    assert_eq!(app.entity("Estimate", &a).0, 404, "rolled back");
    assert!(r["last_sync_at"].is_string());

    // Without atomic: the good change is applied beside the error.
    let r = delta(&app, &phone.token, body(false));
    assert_eq!(r["success"], json!(false));
    assert_eq!(r["applied_count"], json!(1));
    assert_eq!(r["error_count"], json!(1));
    assert_eq!(app.entity("Estimate", &a).0, 200);
}

#[test]
fn more_than_500_changes_is_413_and_nothing_is_applied() {
    let app = TestApp::spawn();
    let phone = app.register("PHONE");
    let first = new_uuid();
    let changes: Vec<Value> = (0..501)
        .map(|i| {
            let id = if i == 0 { first.clone() } else { new_uuid() };
            change("Estimate", &id, "create", json!({"i": i}), None)
        })
        .collect();
    let (s, body) = app.post(
        "/api/sync/delta",
        Some(&phone.token),
        &json!({"last_sync_at": null, "changes": changes}),
    );
    assert_eq!(s, 413, "{body}");
    assert_eq!(body["error"], json!("too_many_changes"));
    assert_eq!(app.entity("Estimate", &first).0, 404);
    // 500 is fine.
    let changes: Vec<Value> = (0..500)
        .map(|i| change("Estimate", &new_uuid(), "create", json!({"i": i}), None))
        .collect();
    let r = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": null, "changes": changes}),
    );
    assert_eq!(r["applied_count"], json!(500));
}

#[test]
fn server_changes_come_in_commit_order_pages_with_has_more() {
    // 5 × batch_size = 10 per answer.
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "2")]);
    let mut desk = app.register("DESK");
    let phone = app.register("PHONE");
    let ids: Vec<String> = (0..23).map(|_| new_uuid()).collect();
    for chunk in ids.chunks(5) {
        desk.sync(
            &app,
            chunk
                .iter()
                .map(|u| upsert("Item", u, 0, json!({"n": 1})))
                .collect(),
        );
    }
    let mut got = Vec::new();
    let mut last = Value::Null;
    let mut answers = 0;
    loop {
        let r = delta(
            &app,
            &phone.token,
            json!({"last_sync_at": last, "changes": []}),
        );
        answers += 1;
        let ops = server_ops(&r);
        assert!(ops.len() <= 10, "{r}");
        assert!(ops.iter().all(|o| o.2 == "create"));
        got.extend(ops.into_iter().map(|o| o.1));
        last = r["last_sync_at"].clone();
        if !r["has_more"].as_bool().unwrap() {
            break;
        }
        assert!(answers < 10);
    }
    assert_eq!(answers, 3);
    assert_eq!(got, ids, "commit order, nothing twice");
    // Nothing new since.
    let r = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": last, "changes": []}),
    );
    assert!(server_ops(&r).is_empty());
    // An update from the desk comes as `update`, a deletion as `delete`.
    desk.sync(
        &app,
        vec![
            upsert("Item", &ids[0], 1, json!({"n": 2})),
            delete("Item", &ids[1], 1),
        ],
    );
    let r = delta(
        &app,
        &phone.token,
        json!({"last_sync_at": last, "changes": []}),
    );
    assert_eq!(
        server_ops(&r),
        vec![
            ("Item".into(), ids[0].clone(), "update".into()),
            ("Item".into(), ids[1].clone(), "delete".into()),
        ]
    );
}

#[test]
fn another_device_on_the_same_token_receives_the_changes_and_the_device_is_shown() {
    let app = TestApp::spawn();
    let node = app.register("SHARED");
    let start = delta(
        &app,
        &node.token,
        json!({"last_sync_at": null, "changes": []}),
    );
    let t0 = start["last_sync_at"].as_str().unwrap().to_string();
    let x = new_uuid();
    let a = delta(
        &app,
        &node.token,
        json!({"last_sync_at": t0, "device_id": "tablet-7", "changes": [
            change("Estimate", &x, "create", json!({"name": "x"}), None)
        ]}),
    );
    assert!(
        server_ops(&a).is_empty(),
        "its own change is not echoed: {a}"
    );
    let b = delta(
        &app,
        &node.token,
        json!({"last_sync_at": t0, "device_id": "phone-2", "changes": []}),
    );
    assert_eq!(
        server_ops(&b),
        vec![("Estimate".to_string(), x.clone(), "create".to_string())]
    );
    assert_eq!(app.node_status(&node)["last_device"], json!("phone-2"));
    let (s, list) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(s, 200);
    let me = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == json!(node.id))
        .unwrap()
        .clone();
    assert_eq!(me["last_device"], json!("phone-2"));
}

#[test]
fn a_scoped_node_writes_and_reads_only_its_tenant_and_hears_of_a_scope_move() {
    let app = scoped_app();
    let one = node_with(&app, "ONE", &["t1"], None);
    let (mine, theirs) = (new_uuid(), new_uuid());
    admin_put(
        &app,
        "Task",
        &theirs,
        json!({"tenant_id": "t2", "title": "secret"}),
    );
    let a = delta(
        &app,
        &one.token,
        json!({"last_sync_at": null, "changes": [
            change("Task", &mine, "create", json!({"title": "mine"}), None),
            change("Task", &theirs, "update", json!({"title": "hijack"}), Some(1)),
        ]}),
    );
    assert_eq!(a["applied_count"], json!(1), "{a}");
    assert_eq!(a["errors"][0]["reason"], json!("forbidden_scope"));
    assert_eq!(a["errors"][0]["index"], json!(1));
    assert!(!a.to_string().contains("secret"), "{a}");
    // The one scope was stamped: the state differs from what was sent, so it comes back.
    assert_eq!(
        server_ops(&a),
        vec![("Task".to_string(), mine.clone(), "create".to_string())]
    );
    assert_eq!(a["server_changes"][0]["data"]["tenant_id"], json!("t1"));
    assert_eq!(data_of(&app, "Task", &theirs).1["title"], json!("secret"));
    let last = a["last_sync_at"].clone();

    // The admin moves `mine` to t2 and changes `theirs` again: ONE hears of the move only.
    admin_put(
        &app,
        "Task",
        &mine,
        json!({"tenant_id": "t2", "title": "moved"}),
    );
    admin_put(
        &app,
        "Task",
        &theirs,
        json!({"tenant_id": "t2", "title": "secret2"}),
    );
    let b = delta(
        &app,
        &one.token,
        json!({"last_sync_at": last, "changes": []}),
    );
    assert_eq!(
        server_ops(&b),
        vec![("Task".to_string(), mine.clone(), "delete".to_string())]
    );
    assert_eq!(b["server_changes"][0]["data"], Value::Null);
    assert!(!b.to_string().contains("secret") && !b.to_string().contains("moved"));
}

#[test]
fn malformed_requests_and_wrong_tokens_are_refused() {
    let app = TestApp::spawn();
    let phone = app.register("PHONE");
    let (s, body) = app.post("/api/sync/delta", Some(&phone.token), &json!([]));
    assert_eq!(s, 422, "{body}");
    assert_eq!(body["error"], json!("invalid_request"));
    let (s, body) = app.post_raw("/api/sync/delta", Some(&phone.token), b"{not json");
    assert_eq!(s, 400, "{body}");
    for bad in [
        json!({"last_sync_at": "yesterday", "changes": []}),
        json!({"last_sync_at": true, "changes": []}),
        json!({"changes": [{"entity_type": "A"}]}),
        json!({"changes": "x"}),
        json!({"changes": [], "device_id": "x".repeat(200)}),
    ] {
        let (s, body) = app.post("/api/sync/delta", Some(&phone.token), &bad);
        assert_eq!(s, 422, "{bad}: {body}");
        assert_eq!(body["error"], json!("invalid_request"));
    }
    // A rule-breaking change is rejected on its own.
    let r = delta(
        &app,
        &phone.token,
        json!({"changes": [change("Estimate", &new_uuid(), "upsert", json!({}), None)]}),
    );
    assert_eq!(r["errors"][0]["reason"], json!("unknown_operation"));
    let (s, body) = app.post(
        "/api/sync/delta",
        Some(ADMIN),
        &json!({"last_sync_at": null, "changes": []}),
    );
    assert_eq!(s, 401, "{body}");
    assert_eq!(body["error"], json!("unauthorized"));
    let (s, _) = app.post("/api/sync/delta", None, &json!({"changes": []}));
    assert_eq!(s, 401);
}
