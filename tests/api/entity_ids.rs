//! Entity ids beyond UUIDs (PROTOCOL 1.1 §1): `task-1`, WatermelonDB-like `a1B2c3D4e5F6g7H8`,
//! `ns:thing.1` travel through the hub unchanged; ids that break the rule are refused with the
//! rule in the message, per change in packets and 422 on the admin routes.

use crate::helpers::*;
use crate::node_e2e::{init, node, ok, sync};
use serde_json::{json, Value};

const IDS: [&str; 3] = ["task-1", "a1B2c3D4e5F6g7H8", "ns:thing.1"];

#[test]
fn non_uuid_ids_travel_between_two_node_processes() {
    let app = TestApp::spawn();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (da.path(), db.path());
    init(a, &app.base, "A");
    init(b, &app.base, "B");
    for (i, id) in IDS.iter().enumerate() {
        let v = ok(
            a,
            &["create", "Task", &format!(r#"{{"n": {i}}}"#), "--id", id],
        );
        assert_eq!(v["uuid"], *id, "{v}");
    }
    // Ids are case-sensitive: `Task-1` is another entity than `task-1`.
    ok(a, &["put", "Task", "Task-1", r#"{"n": "upper"}"#]);
    // `create --id` never replaces.
    let (code, out) = node(a, &["create", "Task", "{}", "--id", "task-1"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(sync(a)["sent"], 4);
    assert_eq!(sync(b)["received"], 4);
    for (i, id) in IDS.iter().enumerate() {
        let e = ok(b, &["get", "Task", id]);
        assert_eq!(e["data"], json!({ "n": i }), "{id}: {e}");
        assert_eq!(e["entity_uuid"], *id);
        let (s, body) = app.entity("Task", id);
        assert_eq!(s, 200, "{id}: {body}");
        assert_eq!(body["entity_uuid"], *id);
    }
    assert_eq!(
        ok(b, &["get", "Task", "Task-1"])["data"],
        json!({"n": "upper"})
    );
    assert_eq!(ok(b, &["get", "Task", "task-1"])["data"], json!({"n": 0}));

    // B edits and deletes; A receives both.
    ok(b, &["put", "Task", "ns:thing.1", r#"{"n": 2, "by": "B"}"#]);
    ok(b, &["delete", "Task", "task-1"]);
    assert_eq!(sync(b)["sent"], 2);
    assert_eq!(sync(a)["received"], 2);
    assert_eq!(
        ok(a, &["get", "Task", "ns:thing.1"])["data"],
        json!({"n": 2, "by": "B"})
    );
    assert_eq!(ok(a, &["get", "Task", "task-1"])["deleted"], true);
    assert_eq!(app.entity("Task", "task-1").1["deleted"], true);
}

#[test]
fn the_node_refuses_invalid_ids_before_queueing() {
    let app = TestApp::spawn();
    let d = tempfile::tempdir().unwrap();
    init(d.path(), &app.base, "A");
    let upper = new_uuid().to_uppercase();
    let long = "x".repeat(129);
    for (id, says) in [
        ("-x", "must match"),
        ("a/b", "must match"),
        ("a b", "must match"),
        ("", "is empty"),
        (long.as_str(), "at most 128"),
        (upper.as_str(), "must be lowercase"),
    ] {
        // `--` so that `-x` is an id, not an option.
        let out = crate::node_e2e::node_raw(d.path(), &["put", "--", "Task", id, "{}"], false);
        assert!(!out.status.success(), "{id:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{id:?}: {err}");
    }
    assert_eq!(ok(d.path(), &["status"])["status"]["pending"], 0);
}

#[test]
fn invalid_ids_are_rejected_per_change_with_the_rule() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let upper = new_uuid().to_uppercase();
    let long = "x".repeat(129);
    let bad: Vec<(&str, &str)> = vec![
        ("-x", "must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"),
        (&long, "at most 128"),
        (&upper, "must be lowercase"),
        ("", "is empty"),
        ("a/b", "must match"),
        ("a b", "must match"),
    ];
    let mut changes: Vec<Value> = bad
        .iter()
        .map(|(id, _)| upsert("Task", id, 0, json!({"bad": true})))
        .collect();
    for id in IDS {
        changes.push(upsert("Task", id, 0, json!({"id": id})));
    }
    let ex = a.sync(&app, changes);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], IDS.len(), "{}", ex.body);
    assert_eq!(ex.body["error_count"], bad.len(), "{}", ex.body);
    let errors = ex.body["errors"].as_array().unwrap();
    for (e, (id, says)) in errors.iter().zip(&bad) {
        assert_eq!(e["error"], "invalid_change", "{e}");
        assert_eq!(e["reason"], "invalid_entity_uuid", "{e}");
        let m = e["message"].as_str().unwrap();
        assert!(m.starts_with("entity id "), "{m}");
        assert!(m.contains(says), "{id:?}: {m}");
    }
    for id in IDS {
        assert_eq!(app.entity("Task", id).1["data"], json!({ "id": id }));
    }
    // The lowercase spelling of the refused UUID is an id like any other, unrelated.
    assert_eq!(app.entity("Task", &upper.to_lowercase()).0, 404);
}

#[test]
fn admin_entity_routes_take_any_id_in_the_path() {
    let app = TestApp::spawn();
    let mut n = app.register("N");
    for id in ["ns:thing.1", "a.b", "a1B2c3D4e5F6g7H8", "x:y:z-1_2.3"] {
        let path = format!("/api/sync/entities/Task/{id}");
        let (s, body) = app.put(&path, Some(ADMIN), &json!({"data": {"id": id}}));
        assert_eq!(s, 200, "{id}: {body}");
        assert_eq!(body["entity_uuid"], id);
        assert_eq!(body["version"], 1);
        let (s, body) = app.get(&path, Some(ADMIN));
        assert_eq!(s, 200, "{id}: {body}");
        assert_eq!(body["data"], json!({ "id": id }));
    }
    // Percent-encoded (as the dashboard's encodeURIComponent writes it) is the same id.
    let (s, body) = app.get("/api/sync/entities/Task/ns%3Athing.1", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["entity_uuid"], "ns:thing.1");
    let got = n.drain(&app);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().any(|c| c["entity_uuid"] == "ns:thing.1"));
    let (s, body) = app.delete("/api/sync/entities/Task/a.b", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["deleted"], true);
    // Listing pages by id, any id (in the database's text order).
    let list = |after: Option<&str>| -> Vec<String> {
        let q = after.map(|a| format!("&after={a}")).unwrap_or_default();
        let (s, body) = app.get(
            &format!("/api/sync/entities?entity_type=Task&limit=10{q}"),
            Some(ADMIN),
        );
        assert_eq!(s, 200, "{body}");
        body["entities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["entity_uuid"].as_str().unwrap().to_string())
            .collect()
    };
    let all = list(None);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["a.b", "a1B2c3D4e5F6g7H8", "ns:thing.1", "x:y:z-1_2.3"],
        "tombstones are listed too"
    );
    assert_eq!(list(Some(&all[1])), all[2..].to_vec());

    // A well-formed id the hub never had: 404; a malformed one: 422 with the rule.
    let long = "x".repeat(129);
    let upper = new_uuid().to_uppercase();
    for (id, status, error) in [
        ("task-404", 404, "not_found"),
        ("-x", 422, "invalid_request"),
        (upper.as_str(), 422, "invalid_request"),
        (long.as_str(), 422, "invalid_request"),
        ("a%20b", 422, "invalid_request"),
        ("%C3%A9", 422, "invalid_request"),
    ] {
        let path = format!("/api/sync/entities/Task/{id}");
        for (s, body) in [
            app.get(&path, Some(ADMIN)),
            app.put(&path, Some(ADMIN), &json!({"data": {}})).clone(),
        ] {
            if id == "task-404" && body["version"] == 1 {
                // The PUT of a new, well-formed id creates it.
                assert_eq!(s, 200, "{body}");
                continue;
            }
            assert_eq!(s, status, "{id}: {body}");
            assert_eq!(body["error"], error, "{id}: {body}");
        }
        if status == 422 {
            let (_, body) = app.get(&path, Some(ADMIN));
            assert!(
                body["message"].as_str().unwrap().contains("entity id"),
                "{body}"
            );
        }
    }
    // A `/` cannot be inside an id: the path names no route.
    let (s, body) = app.get("/api/sync/entities/Task/a/b", Some(ADMIN));
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"], "not_found", "{body}");
}
