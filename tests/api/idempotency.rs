//! Nothing is applied twice, and a resent packet is answered as the original was.
use crate::helpers::*;
use serde_json::json;

#[test]
fn a_resent_duplicate_repeats_the_original_errors_and_conflicts() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    a.sync(&app, vec![upsert("Doc", &u, 0, json!({"v": "a1"}))]);
    b.drain(&app);
    a.sync(
        &app,
        vec![change("UPDATE", "Doc", &u, 1, json!({"v": "a2"}))],
    );

    // B's packet: one stale edit (conflict) and one bad change (rejected).
    let bad = change("UPDATE", "bad-type", &new_uuid(), 0, json!({}));
    let stale = change("UPDATE", "Doc", &u, 1, json!({"v": "b2"}));
    let packet = b.packet(b.next_packet_no, b.acked, vec![stale.clone(), bad.clone()]);
    let first = b.post_packet(&app, &packet);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["duplicate"], false);
    assert_eq!(first.body["error_count"], 1);
    assert_eq!(first.body["conflict_count"], 1);

    // The answer is lost; B resends the identical packet.
    let again = b.post_packet(&app, &packet);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["processed_count"], 0);
    assert_eq!(again.body["errors"], first.body["errors"]);
    assert_eq!(again.body["conflicts"], first.body["conflicts"]);
    assert_eq!(again.body["error_count"], 1);
    assert_eq!(again.body["conflict_count"], 1);
    // Still exactly one history row.
    assert_eq!(app.conflicts(&format!("?entity_uuid={u}")).len(), 1);

    // A clean duplicate reports nothing.
    let ok = b.packet(packet["packet_no"].as_u64().unwrap() + 1, 0, vec![]);
    assert_eq!(b.post_packet(&app, &ok).body["duplicate"], false);
    let dup = b.post_packet(&app, &ok);
    assert_eq!(dup.body["duplicate"], true);
    assert_eq!(dup.body["errors"], json!([]));
    assert_eq!(dup.body["conflicts"], json!([]));
}

#[test]
fn the_same_change_id_in_a_later_packet_is_not_applied_twice() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let c = upsert("Doc", &u, 0, json!({"v": 1}));
    assert_eq!(a.sync(&app, vec![c.clone()]).body["processed_count"], 1);
    b.drain(&app);
    // A node that lost its packet store sends the same change again, in a new packet.
    let ex = a.sync(&app, vec![c]);
    assert_eq!(ex.status, 200);
    assert_eq!(ex.body["conflict_count"], 0);
    let (_, e) = app.entity("Doc", &u);
    assert_eq!(
        e["version"], 1,
        "the repeated change made no new version: {e}"
    );
    assert!(
        b.sync(&app, vec![]).changes().is_empty(),
        "nothing new for B"
    );
}

#[test]
fn insert_means_based_on_nothing_even_with_a_base_version() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let u = new_uuid();
    let mut c = upsert("Doc", &u, 0, json!({"v": 1}));
    c["base_version"] = json!(4);
    let ex = a.sync(&app, vec![c]);
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    assert_eq!(app.entity("Doc", &u).1["version"], 1);
}

#[test]
fn admin_delete_of_a_deleted_entity_is_a_no_op() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let u = new_uuid();
    a.sync(&app, vec![upsert("Doc", &u, 0, json!({"v": 1}))]);
    let path = format!("/api/sync/entities/Doc/{u}");
    let (s, first) = app.delete(&path, Some(ADMIN));
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["version"], 2);
    let (s, second) = app.delete(&path, Some(ADMIN));
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["version"], 2, "no new tombstone version");
    assert_eq!(second["deleted"], true);
}

#[test]
fn wrong_method_on_a_known_route_is_json_405() {
    let app = TestApp::spawn();
    for (method_get, path) in [
        (true, "/api/sync/exchange"),
        (true, "/api/sync/register"),
        (false, "/api/sync/status"),
        (false, "/api/sync/nodes"),
    ] {
        let (s, body) = if method_get {
            app.get(path, Some(ADMIN))
        } else {
            app.post(path, Some(ADMIN), &json!({}))
        };
        assert_eq!(s, 405, "{path}: {body}");
        assert_eq!(body["error"], "method_not_allowed", "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains(path));
    }
    let (s, body) = app.put("/api/sync/status", Some(ADMIN), &json!({}));
    assert_eq!(
        (s, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}
