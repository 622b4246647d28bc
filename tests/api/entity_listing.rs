//! The admin's entity listing (`GET /api/sync/entity-types`, `GET /api/sync/entities`, the
//! dashboard's browser) and the status counter behind its exchanges/s, black-box over HTTP.

use crate::helpers::*;
use serde_json::{json, Value};

#[track_caller]
fn assert_error(got: (u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "expected {status} {code}: {body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Task ids that sort in number order: t(10) < t(20) < …
fn t(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn ids(page: &Value) -> Vec<String> {
    page["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity_uuid"].as_str().unwrap().to_string())
        .collect()
}

/// Node A stores Tasks t(10) … t(50) (t(30) then deleted) and one Note.
fn seeded() -> (TestApp, TestNode) {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut changes: Vec<Value> = (1..=5)
        .map(|i| upsert("Task", &t(i * 10), 0, json!({"title": format!("task {i}")})))
        .collect();
    changes.push(upsert("Note", &t(1), 0, json!({"text": "hello"})));
    let ex = a.sync(&app, changes);
    assert_eq!(ex.body["processed_count"], 6, "{}", ex.body);
    let ex = a.sync(&app, vec![delete("Task", &t(30), 1)]);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    (app, a)
}

#[test]
fn listing_needs_the_admin_token() {
    let (app, a) = seeded();
    for path in [
        "/api/sync/entity-types",
        "/api/sync/entities?entity_type=Task",
    ] {
        assert_error(app.get(path, None), 401, "unauthorized");
        assert_error(app.get(path, Some("not-a-token")), 401, "unauthorized");
        assert_error(app.get(path, Some(&a.token)), 403, "forbidden");
        assert_eq!(app.get(path, Some(ADMIN)).0, 200, "{path}");
    }
}

#[test]
fn entity_types_lists_every_stored_type_sorted() {
    let app = TestApp::spawn();
    let (s, body) = app.get("/api/sync/entity-types", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"entity_types": []}));

    let mut a = app.register("A");
    a.sync(
        &app,
        vec![
            upsert("Zebra", &t(1), 0, json!({})),
            upsert("Apple", &t(2), 0, json!({})),
            upsert("Mango", &t(3), 0, json!({})),
            upsert("Mango", &t(4), 0, json!({})),
        ],
    );
    // A type whose only entity is deleted is still stored (its tombstone reaches nodes).
    a.sync(&app, vec![delete("Zebra", &t(1), 1)]);
    let (s, body) = app.get("/api/sync/entity-types", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"entity_types": ["Apple", "Mango", "Zebra"]}));
}

#[test]
fn entities_are_paged_by_id_with_tombstones() {
    let (app, _a) = seeded();
    let get = |q: &str| -> Value {
        let (s, body) = app.get(&format!("/api/sync/entities?{q}"), Some(ADMIN));
        assert_eq!(s, 200, "{q}: {body}");
        body
    };

    let p1 = get("entity_type=Task&limit=2");
    assert_eq!(ids(&p1), [t(10), t(20)]);
    assert_eq!(p1["next_after"], json!(t(20)));
    let first = &p1["entities"][0];
    assert_eq!(first["entity_type"], "Task");
    assert_eq!(first["version"], 1);
    assert_eq!(first["data"], json!({"title": "task 1"}));
    assert_eq!(first["deleted"], false);
    assert!(first["updated_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let p2 = get(&format!("entity_type=Task&limit=2&after={}", t(20)));
    assert_eq!(ids(&p2), [t(30), t(40)]);
    let tomb = &p2["entities"][0];
    assert_eq!(tomb["deleted"], true, "{tomb}");
    assert_eq!(tomb["version"], 2, "{tomb}");
    assert_eq!(tomb["data"], Value::Null, "{tomb}");
    assert_eq!(p2["next_after"], json!(t(40)));

    let p3 = get(&format!("entity_type=Task&limit=2&after={}", t(40)));
    assert_eq!(ids(&p3), [t(50)]);
    assert_eq!(p3["next_after"], Value::Null);

    // A page that ends exactly at the last entity says so (no empty page after it).
    let all = get("entity_type=Task&limit=5");
    assert_eq!(ids(&all), [t(10), t(20), t(30), t(40), t(50)]);
    assert_eq!(all["next_after"], Value::Null);
    // The default page holds them all; other types stay out.
    assert_eq!(ids(&get("entity_type=Task")).len(), 5);
    assert_eq!(ids(&get("entity_type=Note")), [t(1)]);
    // `after` need not exist; an unknown type is an empty list, not an error.
    let after = get(&format!("entity_type=Task&after={}", t(25)));
    assert_eq!(ids(&after), [t(30), t(40), t(50)]);
    let none = get("entity_type=Nothing");
    assert_eq!(none, json!({"entities": [], "next_after": null}));
    // Empty parameters mean "not given".
    assert_eq!(ids(&get("entity_type=Task&after=&limit=")).len(), 5);
}

#[test]
fn bad_listing_parameters_are_422() {
    let (app, _a) = seeded();
    for q in [
        "",
        "entity_type=",
        "limit=10",
        "entity_type=1Task",
        "entity_type=Task%20X",
        "entity_type=Task&limit=0",
        "entity_type=Task&limit=1001",
        "entity_type=Task&limit=-1",
        "entity_type=Task&limit=ten",
        "entity_type=Task&after=has%20space",
        "entity_type=Task&after=3F2B8C1E-5D4A-4E6F-9A7B-1C2D3E4F5A6B",
        "entity_type=Task&entity_type=Note",
    ] {
        assert_error(
            app.get(&format!("/api/sync/entities?{q}"), Some(ADMIN)),
            422,
            "invalid_request",
        );
    }
    // The largest page is allowed.
    assert_eq!(
        app.get(
            "/api/sync/entities?entity_type=Task&limit=1000",
            Some(ADMIN)
        )
        .0,
        200
    );
    // Writing to the listing is not a route: JSON 405.
    assert_error(
        app.post("/api/sync/entities", Some(ADMIN), &json!({})),
        405,
        "method_not_allowed",
    );
}

/// `packets_received` counts every applied node packet (one per exchange), not duplicates: two
/// readings give the dashboard its exchanges/s.
#[test]
fn status_counts_received_packets() {
    let app = TestApp::spawn();
    let status = |app: &TestApp| {
        let (s, body) = app.get("/api/sync/status", Some(ADMIN));
        assert_eq!(s, 200, "{body}");
        body["packets_received"].as_i64().unwrap()
    };
    assert_eq!(status(&app), 0);
    let mut a = app.register("A");
    let mut b = app.register("B");
    a.sync(&app, vec![upsert("Task", &t(1), 0, json!({}))]);
    a.sync(&app, vec![]);
    b.sync(&app, vec![]);
    assert_eq!(status(&app), 3);
    // A resent packet is a duplicate: acknowledged, not counted again.
    let again = a.packet(a.next_packet_no - 1, a.acked, vec![]);
    let ex = a.post_packet(&app, &again);
    assert_eq!(ex.body["duplicate"], true, "{}", ex.body);
    assert_eq!(status(&app), 3);
}
