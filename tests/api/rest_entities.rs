//! A node's entity reads and writes over REST (PROTOCOL §11.3): `GET`, `PUT`, `PATCH` and
//! `DELETE /api/sync/entities/{type}/{id}` with a node token, `ETag` and `If-Match`.

use std::io::Read;

use crate::helpers::*;
use serde_json::{json, Value};

/// `Card` lets the client win conflicts; the default is server_wins.
const CONFIG: &str = r#"
[conflicts.types.Card]
strategy = "client_wins"
"#;

/// An answer: status, `ETag` header, JSON body.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    if_match: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req =
        ureq::request(method, &app.url(path)).set("Authorization", &format!("Bearer {token}"));
    if let Some(v) = if_match {
        req = req.set("If-Match", v);
    }
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_bytes(b.to_string().as_bytes()),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let etag = resp.header("ETag").map(str::to_string);
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    Answer {
        status,
        etag,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

fn path(t: &str, id: &str) -> String {
    format!("/api/sync/entities/{t}/{id}")
}

fn put(app: &TestApp, n: &TestNode, t: &str, id: &str, m: Option<&str>, data: Value) -> Answer {
    send(
        app,
        "PUT",
        &path(t, id),
        &n.token,
        m,
        Some(json!({ "data": data })),
    )
}

fn patch(app: &TestApp, n: &TestNode, t: &str, id: &str, m: Option<&str>, data: Value) -> Answer {
    send(
        app,
        "PATCH",
        &path(t, id),
        &n.token,
        m,
        Some(json!({ "data": data })),
    )
}

#[test]
fn etag_and_if_match_round_trip_and_a_stale_write_is_409_with_the_server_entity() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let b = app.register("B");
    let id = new_uuid();
    let created = put(&app, &a, "Doc", &id, None, json!({"title": "one"}));
    assert_eq!(
        (created.status, created.etag.as_deref()),
        (200, Some("\"1\"")),
        "{}",
        created.body
    );
    assert_eq!(created.body["entity_type"], "Doc");
    assert_eq!(created.body["entity_uuid"], json!(id));
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["deleted"], false);
    assert!(created.body["updated_at"].as_str().unwrap().ends_with('Z'));
    let got = send(&app, "GET", &path("Doc", &id), &b.token, None, None);
    assert_eq!((got.status, got.etag.as_deref()), (200, Some("\"1\"")));
    assert_eq!(got.body["data"], json!({"title": "one"}));
    // B writes on what it read.
    let etag = got.etag.unwrap();
    let second = put(&app, &b, "Doc", &id, Some(&etag), json!({"title": "two"}));
    assert_eq!(
        (second.status, second.etag.as_deref()),
        (200, Some("\"2\"")),
        "{}",
        second.body
    );
    // A writes on version 1 again: it lost (server_wins), 409 with the server's entity and the
    // history row that keeps A's version.
    let stale = put(
        &app,
        &a,
        "Doc",
        &id,
        Some("\"1\""),
        json!({"title": "stale"}),
    );
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(stale.body["error"], "conflict");
    assert!(stale.body["message"].as_str().unwrap().contains("history"));
    assert_eq!(stale.body["entity"]["version"], 2);
    assert_eq!(stale.body["entity"]["data"], json!({"title": "two"}));
    assert_eq!(stale.etag.as_deref(), Some("\"2\""));
    let rows = app.conflicts(&format!("?entity_uuid={id}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], stale.body["conflict_id"]);
    assert_eq!(rows[0]["serialized_data"], json!({"title": "stale"}));
    assert_eq!(rows[0]["conflict_resolution"], "server_wins:server");
    // Several apps may share a token: a stale If-Match of the same node conflicts too.
    let own = put(
        &app,
        &b,
        "Doc",
        &id,
        Some("\"1\""),
        json!({"title": "b-stale"}),
    );
    assert_eq!(own.status, 409, "{}", own.body);
    // Without If-Match the write is based on the current version: last writer wins.
    let blind = put(&app, &a, "Doc", &id, None, json!({"title": "three"}));
    assert_eq!(
        (blind.status, blind.etag.as_deref()),
        (200, Some("\"3\"")),
        "{}",
        blind.body
    );
    // An If-Match ahead of the server: 409 with the entity, no history row.
    let ahead = put(&app, &a, "Doc", &id, Some("\"9\""), json!({"title": "x"}));
    assert_eq!(
        (ahead.status, &ahead.body["entity"]["version"]),
        (409, &json!(3)),
        "{}",
        ahead.body
    );
    assert!(ahead.body.get("conflict_id").is_none(), "{}", ahead.body);
    // A malformed If-Match is a JSON 4xx, nothing written.
    for bad in ["3", "\"three\"", "W/\"3\""] {
        let r = put(&app, &a, "Doc", &id, Some(bad), json!({"title": "x"}));
        assert_eq!(
            (r.status, &r.body["error"]),
            (422, &json!("invalid_request")),
            "{bad}: {}",
            r.body
        );
    }
    assert_eq!(app.entity("Doc", &id).1["version"], 3);
}

#[test]
fn patch_merges_disjoint_fields_and_overlapping_ones_follow_the_strategy() {
    let app = TestApp::spawn_with(CONFIG, &[]);
    let a = app.register("A");
    let b = app.register("B");
    for (t, lost) in [("Task", true), ("Card", false)] {
        let id = new_uuid();
        let v1 = put(
            &app,
            &a,
            t,
            &id,
            None,
            json!({"title": "t", "done": false, "n": 1}),
        );
        assert_eq!(v1.status, 200, "{}", v1.body);
        // B renames it; A, still on version 1, marks it done: disjoint fields, no conflict.
        let b2 = patch(&app, &b, t, &id, Some("\"1\""), json!({"title": "B"}));
        assert_eq!(
            (b2.status, b2.etag.as_deref()),
            (200, Some("\"2\"")),
            "{}",
            b2.body
        );
        let a3 = patch(&app, &a, t, &id, Some("\"1\""), json!({"done": true}));
        assert_eq!(
            (a3.status, a3.etag.as_deref()),
            (200, Some("\"3\"")),
            "{}",
            a3.body
        );
        assert_eq!(a3.body["data"], json!({"title": "B", "done": true, "n": 1}));
        assert!(app.conflicts(&format!("?entity_uuid={id}")).is_empty());
        // Both change the title on version 3: B first, then A (its `n` applies anyway).
        let b4 = patch(&app, &b, t, &id, Some("\"3\""), json!({"title": "B2"}));
        assert_eq!(b4.status, 200, "{}", b4.body);
        let a5 = patch(
            &app,
            &a,
            t,
            &id,
            Some("\"3\""),
            json!({"title": "A2", "n": 2}),
        );
        let rows = app.conflicts(&format!("?entity_uuid={id}"));
        assert_eq!(rows.len(), 1, "{t}");
        if lost {
            assert_eq!(a5.status, 409, "{}", a5.body);
            assert_eq!(a5.body["error"], "conflict");
            assert_eq!(a5.body["conflict_id"], rows[0]["id"]);
            assert_eq!(
                a5.body["entity"]["data"],
                json!({"title": "B2", "done": true, "n": 2})
            );
            assert_eq!(rows[0]["conflict_resolution"], "server_wins:server");
        } else {
            assert_eq!(a5.status, 200, "{}", a5.body);
            assert_eq!(
                a5.body["data"],
                json!({"title": "A2", "done": true, "n": 2})
            );
            assert_eq!(rows[0]["conflict_resolution"], "client_wins:client");
        }
    }
}

#[test]
fn reads_and_writes_stay_within_the_nodes_scopes_and_types() {
    let app = TestApp::spawn_with("[scopes]\nfield = \"tenant_id\"\n", &[]);
    let a = app.register_with("A", json!({"scopes": ["fam-1"], "types": ["Doc"]}));
    let two = app.register_with("T", json!({"scopes": ["fam-1", "fam-2"]}));
    let mine = new_uuid();
    let theirs = new_uuid();
    let task = new_uuid();
    for (t, id, scope) in [
        ("Doc", &mine, "fam-1"),
        ("Doc", &theirs, "fam-2"),
        ("Task", &task, "fam-1"),
    ] {
        let (s, body) = app.put(
            &path(t, id),
            Some(ADMIN),
            &json!({"data": {"tenant_id": scope}}),
        );
        assert_eq!(s, 200, "{body}");
    }
    let get = |id: &str, t: &str| send(&app, "GET", &path(t, id), &a.token, None, None);
    assert_eq!(get(&mine, "Doc").status, 200);
    let missing = new_uuid();
    for (t, id) in [("Doc", &theirs), ("Task", &task), ("Doc", &missing)] {
        let r = get(id, t);
        assert_eq!(
            (r.status, &r.body["error"]),
            (404, &json!("not_found")),
            "{t}/{id}"
        );
        assert_eq!(r.body["message"], format!("no entity {t}/{id}"));
    }
    // Writing another tenant's entity, or into another tenant: 403 with one sentence.
    let w1 = put(
        &app,
        &a,
        "Doc",
        &theirs,
        None,
        json!({"tenant_id": "fam-1"}),
    );
    let w2 = put(
        &app,
        &a,
        "Doc",
        &new_uuid(),
        None,
        json!({"tenant_id": "fam-2"}),
    );
    assert_eq!(
        (w1.status, w2.status),
        (403, 403),
        "{} {}",
        w1.body,
        w2.body
    );
    assert_eq!(w1.body["message"], w2.body["message"]);
    let w3 = put(&app, &a, "Task", &new_uuid(), None, json!({}));
    assert_eq!(w3.status, 403, "{}", w3.body);
    // Deleting or basing a write on an entity outside the view: 404, as for a missing one.
    let d = send(&app, "DELETE", &path("Doc", &theirs), &a.token, None, None);
    assert_eq!(d.status, 404, "{}", d.body);
    let m = put(
        &app,
        &a,
        "Doc",
        &theirs,
        Some("\"1\""),
        json!({"tenant_id": "fam-1"}),
    );
    assert_eq!(m.status, 404, "{}", m.body);
    assert_eq!(app.entity("Doc", &theirs).1["version"], 1);
    // A new entity gets the node's one scope; a node with two scopes patches without naming
    // one (the entity keeps its own).
    let fresh = new_uuid();
    let c = put(&app, &a, "Doc", &fresh, None, json!({"v": 1}));
    assert_eq!(
        c.body["data"],
        json!({"tenant_id": "fam-1", "v": 1}),
        "{}",
        c.body
    );
    let p = patch(&app, &two, "Doc", &fresh, None, json!({"v": 2}));
    assert_eq!(
        (p.status, &p.body["data"]),
        (200, &json!({"tenant_id": "fam-1", "v": 2})),
        "{}",
        p.body
    );
}

#[test]
fn delete_answers_the_tombstone_and_deletion_wins() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let b = app.register("B");
    let id = new_uuid();
    put(&app, &a, "Doc", &id, None, json!({"v": 1}));
    let d = send(
        &app,
        "DELETE",
        &path("Doc", &id),
        &a.token,
        Some("\"1\""),
        None,
    );
    assert_eq!(
        (d.status, d.etag.as_deref()),
        (200, Some("\"2\"")),
        "{}",
        d.body
    );
    assert_eq!(
        (&d.body["deleted"], &d.body["data"]),
        (&json!(true), &Value::Null)
    );
    let g = send(&app, "GET", &path("Doc", &id), &b.token, None, None);
    assert_eq!((g.status, &g.body["deleted"]), (200, &json!(true)));
    // An update of the deleted entity loses (delete wins): 409 with the tombstone.
    let u = put(&app, &b, "Doc", &id, Some("\"1\""), json!({"v": 2}));
    assert_eq!(
        (u.status, &u.body["entity"]["deleted"]),
        (409, &json!(true)),
        "{}",
        u.body
    );
    let rows = app.conflicts(&format!("?entity_uuid={id}"));
    assert_eq!(rows[0]["conflict_resolution"], "delete_wins:server");
    // Deleting again changes nothing; deleting what never existed is 404.
    let again = send(&app, "DELETE", &path("Doc", &id), &b.token, None, None);
    assert_eq!((again.status, &again.body["version"]), (200, &json!(2)));
    let none = send(
        &app,
        "DELETE",
        &path("Doc", &new_uuid()),
        &b.token,
        None,
        None,
    );
    assert_eq!(none.status, 404, "{}", none.body);
}

#[test]
fn rest_changes_reach_packet_nodes_and_packet_changes_reach_rest() {
    let app = TestApp::spawn();
    let rest = app.register("REST");
    let mut desk = app.register("DESK");
    let id = new_uuid();
    let w = put(&app, &rest, "Doc", &id, None, json!({"from": "rest"}));
    assert_eq!(w.status, 200, "{}", w.body);
    let got = desk.drain(&app);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (&got[0]["data"], &got[0]["version"]),
        (&json!({"from": "rest"}), &json!(1))
    );
    let ex = desk.sync(&app, vec![upsert("Doc", &id, 1, json!({"from": "desk"}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    let g = send(&app, "GET", &path("Doc", &id), &rest.token, None, None);
    assert_eq!(
        (g.etag.as_deref(), &g.body["data"]),
        (Some("\"2\""), &json!({"from": "desk"}))
    );
    // A PATCH reaches the desktop as the merged state.
    let p = patch(&app, &rest, "Doc", &id, Some("\"2\""), json!({"n": 1}));
    assert_eq!(p.status, 200, "{}", p.body);
    let got = desk.drain(&app);
    assert_eq!(got.last().unwrap()["data"], json!({"from": "desk", "n": 1}));
}

#[test]
fn the_admin_token_keeps_hub_writes_and_bad_requests_are_json() {
    let app = TestApp::spawn();
    let n = app.register("A");
    let id = new_uuid();
    let admin = send(
        &app,
        "PUT",
        &path("Doc", &id),
        ADMIN,
        None,
        Some(json!({"data": {"v": 1}})),
    );
    assert_eq!(
        (admin.status, admin.etag.as_deref()),
        (200, Some("\"1\"")),
        "{}",
        admin.body
    );
    let p = send(
        &app,
        "PATCH",
        &path("Doc", &id),
        ADMIN,
        None,
        Some(json!({"data": {"v": 2}})),
    );
    assert_eq!(
        (p.status, &p.body["error"]),
        (403, &json!("forbidden")),
        "{}",
        p.body
    );
    // Node writes: an array body, data that is not an object, a bad id.
    let r = send(
        &app,
        "PUT",
        &path("Doc", &id),
        &n.token,
        None,
        Some(json!([{"data": {}}])),
    );
    assert_eq!(
        (r.status, &r.body["error"]),
        (422, &json!("invalid_request")),
        "{}",
        r.body
    );
    let r = send(
        &app,
        "PATCH",
        &path("Doc", &id),
        &n.token,
        None,
        Some(json!({"data": [1]})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let r = put(&app, &n, "Doc", "-bad", None, json!({}));
    assert_eq!(
        (r.status, &r.body["error"]),
        (422, &json!("invalid_request")),
        "{}",
        r.body
    );
    let r = send(&app, "GET", &path("Doc", &id), "nope", None, None);
    assert_eq!(r.status, 401);
}
