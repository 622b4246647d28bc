//! Simple push (PROTOCOL §11.4): `POST /api/sync/push` with a client's change-queue rows.

use crate::helpers::*;
use serde_json::{json, Value};

/// `Note` conflicts go to the client under packets: simple push ignores that (last writer by
/// time); `Rate` is server-only.
const CONFIG: &str = r#"
[conflicts.types.Note]
strategy = "client_wins"

[conflicts.types.Rate]
immutable = true
"#;

fn row(id: &str, t: &str, e: &str, action: &str, payload: Value, ts: Value) -> Value {
    json!({"id": id, "entity_id": e, "entity_type": t, "action": action, "payload": payload,
           "timestamp": ts})
}

fn push(app: &TestApp, token: &str, rows: Vec<Value>) -> (u16, Value) {
    app.post("/api/sync/push", Some(token), &json!({ "changes": rows }))
}

fn pushed(app: &TestApp, token: &str, rows: Vec<Value>) -> Value {
    let (s, body) = push(app, token, rows);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["ok"], true, "{body}");
    body
}

/// A time `secs` seconds before now, RFC 3339.
fn ago(secs: i64) -> String {
    starsync_protocol::format_ts(chrono::Utc::now() - chrono::TimeDelta::seconds(secs))
}

fn millis_ago(secs: i64) -> i64 {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(secs)).timestamp_millis()
}

#[test]
fn a_row_pushed_twice_is_applied_once() {
    let app = TestApp::spawn();
    let n = app.register("PHONE");
    let e = new_uuid();
    let rows = vec![
        row(
            "q-1",
            "Task",
            &e,
            "CREATE",
            json!({"title": "a"}),
            json!(ago(30)),
        ),
        row(
            "q-2",
            "Task",
            &e,
            "UPDATE",
            json!({"title": "b"}),
            json!(millis_ago(20)),
        ),
    ];
    let first = pushed(&app, &n.token, rows.clone());
    assert_eq!(
        (&first["applied"], &first["duplicates"]),
        (&json!(2), &json!(0)),
        "{first}"
    );
    assert_eq!(first["conflicts"], json!([]));
    assert_eq!(first["errors"], json!([]));
    // The answer was lost; the client sends its queue again, and one row more (a row twice in
    // one push counts once too).
    let mut again = rows.clone();
    again.push(row(
        "q-3",
        "Task",
        &e,
        "UPDATE",
        json!({"title": "c"}),
        json!(ago(10)),
    ));
    again.push(row(
        "q-3",
        "Task",
        &e,
        "UPDATE",
        json!({"title": "c"}),
        json!(ago(10)),
    ));
    let second = pushed(&app, &n.token, again);
    assert_eq!(
        (&second["applied"], &second["duplicates"]),
        (&json!(1), &json!(3)),
        "{second}"
    );
    let (_, ent) = app.entity("Task", &e);
    assert_eq!(
        (&ent["version"], &ent["data"]),
        (&json!(3), &json!({"title": "c"}))
    );
    // Another node's rows are its own: the same id is a new row there.
    let m = app.register("TABLET");
    let other = pushed(
        &app,
        &m.token,
        vec![row(
            "q-1",
            "Task",
            &new_uuid(),
            "CREATE",
            json!({}),
            json!(ago(5)),
        )],
    );
    assert_eq!(other["applied"], 1, "{other}");
}

#[test]
fn last_writer_wins_by_timestamp_whatever_the_strategy() {
    let app = TestApp::spawn_with(CONFIG, &[]);
    let a = app.register("A");
    let b = app.register("B");
    let e = new_uuid();
    pushed(
        &app,
        &a.token,
        vec![row(
            "a1",
            "Note",
            &e,
            "CREATE",
            json!({"v": "a1"}),
            json!(ago(60)),
        )],
    );
    // B's edit is newer: it wins (no conflict).
    let won = pushed(
        &app,
        &b.token,
        vec![row(
            "b1",
            "Note",
            &e,
            "UPDATE",
            json!({"v": "b1"}),
            json!(ago(20)),
        )],
    );
    assert_eq!(
        (&won["applied"], &won["conflicts"]),
        (&json!(1), &json!([]))
    );
    // A's row made before B's loses although `Note` is client_wins for packets: history row,
    // reported with the existing vocabulary.
    let lost = pushed(
        &app,
        &a.token,
        vec![row(
            "a2",
            "Note",
            &e,
            "UPDATE",
            json!({"v": "a2"}),
            json!(millis_ago(40)),
        )],
    );
    assert_eq!(lost["applied"], 1, "{lost}");
    let c = &lost["conflicts"][0];
    assert_eq!(c["resolution"], "timestamp_wins", "{lost}");
    assert_eq!(c["conflict_resolution"], "timestamp_wins:server", "{lost}");
    assert_eq!(
        (&c["change_id"], &c["server_version"]),
        (&json!("a2"), &json!(2))
    );
    let (_, ent) = app.entity("Note", &e);
    assert_eq!(
        (&ent["version"], &ent["data"]),
        (&json!(2), &json!({"v": "b1"}))
    );
    let rows = app.conflicts(&format!("?entity_uuid={e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], c["conflict_id"]);
    assert_eq!(rows[0]["serialized_data"], json!({"v": "a2"}));
    assert_eq!(rows[0]["conflict_resolution"], "timestamp_wins:server");
    assert_eq!(rows[0]["source_node_id"], json!(a.id));
    // The same node's own older row loses too: time decides, not who wrote last.
    pushed(
        &app,
        &b.token,
        vec![row(
            "b2",
            "Note",
            &e,
            "UPDATE",
            json!({"v": "b2"}),
            json!(ago(10)),
        )],
    );
    let own = pushed(
        &app,
        &b.token,
        vec![row(
            "b3",
            "Note",
            &e,
            "UPDATE",
            json!({"v": "b3"}),
            json!(ago(15)),
        )],
    );
    assert_eq!(
        own["conflicts"][0]["conflict_resolution"],
        "timestamp_wins:server"
    );
    // A newer row wins.
    let newer = pushed(
        &app,
        &a.token,
        vec![row(
            "a3",
            "Note",
            &e,
            "UPDATE",
            json!({"v": "a3"}),
            json!(ago(1)),
        )],
    );
    assert_eq!(newer["conflicts"], json!([]), "{newer}");
    let (_, ent) = app.entity("Note", &e);
    assert_eq!(
        (&ent["version"], &ent["data"]),
        (&json!(4), &json!({"v": "a3"}))
    );
}

#[test]
fn delete_wins_over_a_later_update() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let b = app.register("B");
    let e = new_uuid();
    pushed(
        &app,
        &a.token,
        vec![
            row("1", "Task", &e, "CREATE", json!({"t": 1}), json!(ago(60))),
            row("2", "Task", &e, "DELETE", Value::Null, json!(ago(50))),
        ],
    );
    // Newer than the deletion, from another node or from the deleter itself: still deleted.
    for (n, id) in [(&b, "3"), (&a, "4")] {
        let body = pushed(
            &app,
            &n.token,
            vec![row(
                id,
                "Task",
                &e,
                "UPDATE",
                json!({"t": 2}),
                json!(ago(5)),
            )],
        );
        assert_eq!(
            body["conflicts"][0]["conflict_resolution"], "delete_wins:server",
            "{body}"
        );
    }
    let (_, ent) = app.entity("Task", &e);
    assert_eq!(
        (&ent["deleted"], &ent["version"]),
        (&json!(true), &json!(2))
    );
    assert_eq!(app.conflicts(&format!("?entity_uuid={e}")).len(), 2);
    // A DELETE older than the current state still deletes (delete wins), keeping the
    // overwritten version in history.
    let f = new_uuid();
    pushed(
        &app,
        &a.token,
        vec![row(
            "5",
            "Task",
            &f,
            "CREATE",
            json!({"t": 1}),
            json!(ago(10)),
        )],
    );
    let del = pushed(
        &app,
        &b.token,
        vec![row("6", "Task", &f, "DELETE", Value::Null, json!(ago(30)))],
    );
    assert_eq!(
        del["conflicts"][0]["conflict_resolution"],
        "delete_wins:client"
    );
    assert_eq!(app.entity("Task", &f).1["deleted"], true);
}

#[test]
fn rule_breaking_rows_are_rejected_one_by_one() {
    let app = TestApp::spawn_with(&format!("{CONFIG}\n[scopes]\nfield = \"tenant_id\"\n"), &[]);
    let n = app.register_with("A", json!({"scopes": ["fam-1"]}));
    let rows = vec![
        row(
            "ok",
            "Task",
            &new_uuid(),
            "CREATE",
            json!({"t": 1}),
            json!(ago(5)),
        ),
        row(
            "imm",
            "Rate",
            &new_uuid(),
            "CREATE",
            json!({"r": 1}),
            json!(ago(5)),
        ),
        row(
            "foreign",
            "Task",
            &new_uuid(),
            "CREATE",
            json!({"tenant_id": "fam-2"}),
            json!(ago(5)),
        ),
        row(
            "when",
            "Task",
            &new_uuid(),
            "CREATE",
            json!({}),
            json!("yesterday"),
        ),
        row(
            "what",
            "Task",
            &new_uuid(),
            "UPSERT",
            json!({}),
            json!(ago(5)),
        ),
        row(
            "data",
            "Task",
            &new_uuid(),
            "UPDATE",
            json!([1]),
            json!(ago(5)),
        ),
        row(
            "id",
            "Task",
            "Not A Valid Id",
            "CREATE",
            json!({}),
            json!(ago(5)),
        ),
    ];
    let body = pushed(&app, &n.token, rows);
    assert_eq!(body["applied"], 1, "{body}");
    let reasons: Vec<(&str, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["change_id"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("imm", "immutable_type"),
            ("foreign", "forbidden_scope"),
            ("when", "invalid_updated_at"),
            ("what", "unknown_operation"),
            ("data", "data_not_object"),
            ("id", "invalid_entity_uuid"),
        ],
        "{body}"
    );
    // The one applied row got the node's scope.
    let (_, page) = app.get("/api/sync/entities?entity_type=Task", Some(ADMIN));
    assert_eq!(
        page["entities"][0]["data"],
        json!({"tenant_id": "fam-1", "t": 1})
    );
    // A rejected row was not applied, so pushing it again is no duplicate.
    let again = pushed(
        &app,
        &n.token,
        vec![row(
            "imm",
            "Rate",
            &new_uuid(),
            "CREATE",
            json!({"r": 1}),
            json!(ago(5)),
        )],
    );
    assert_eq!(
        (&again["duplicates"], &again["errors"][0]["reason"]),
        (&json!(0), &json!("immutable_type"))
    );
}

#[test]
fn malformed_and_oversized_pushes_apply_nothing() {
    let app = TestApp::spawn();
    let n = app.register("A");
    let ok = || {
        row(
            &new_uuid(),
            "Task",
            &new_uuid(),
            "CREATE",
            json!({}),
            json!(ago(5)),
        )
    };
    let rows: Vec<Value> = (0..501).map(|_| ok()).collect();
    let (s, body) = push(&app, &n.token, rows);
    assert_eq!(
        (s, &body["error"]),
        (413, &json!("too_many_changes")),
        "{body}"
    );
    let (s, body) = app.post("/api/sync/push", Some(&n.token), &json!([ok()]));
    assert_eq!(
        (s, &body["error"]),
        (422, &json!("invalid_request")),
        "{body}"
    );
    // A row without an id cannot be reported: the whole push is malformed.
    let mut no_id = ok();
    no_id.as_object_mut().unwrap().remove("id");
    let (s, body) = push(&app, &n.token, vec![ok(), no_id]);
    assert_eq!(
        (s, &body["error"]),
        (422, &json!("invalid_request")),
        "{body}"
    );
    let (s, body) = app.post_raw("/api/sync/push", Some(&n.token), b"{not json");
    assert_eq!(
        (s, &body["error"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    // The admin token is not a node.
    let (s, body) = push(&app, ADMIN, vec![ok()]);
    assert_eq!((s, &body["error"]), (401, &json!("unauthorized")), "{body}");
    let (s, _) = push(&app, "nope", vec![ok()]);
    assert_eq!(s, 401);
    let (_, page) = app.get("/api/sync/entities?entity_type=Task", Some(ADMIN));
    assert_eq!(page["entities"], json!([]));
    // 500 rows is within the bound.
    let body = pushed(&app, &n.token, (0..500).map(|_| ok()).collect());
    assert_eq!(body["applied"], 500);
}

#[test]
fn pushed_rows_reach_packet_nodes_and_packet_changes_decide_later_pushes() {
    let app = TestApp::spawn();
    let phone = app.register("PHONE");
    let mut desk = app.register("DESK");
    let e = new_uuid();
    pushed(
        &app,
        &phone.token,
        vec![row(
            "p1",
            "Task",
            &e,
            "CREATE",
            json!({"t": "phone"}),
            json!(ago(30)),
        )],
    );
    let got = desk.drain(&app);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["data"], json!({"t": "phone"}));
    // The desktop edits it now; the phone's queued row from before loses.
    let ex = desk.sync(&app, vec![upsert("Task", &e, 1, json!({"t": "desk"}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    let late = pushed(
        &app,
        &phone.token,
        vec![row(
            "p2",
            "Task",
            &e,
            "UPDATE",
            json!({"t": "old"}),
            json!(ago(20)),
        )],
    );
    assert_eq!(
        late["conflicts"][0]["conflict_resolution"],
        "timestamp_wins:server"
    );
    assert_eq!(app.entity("Task", &e).1["data"], json!({"t": "desk"}));
}
