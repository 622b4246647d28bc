//! Edge cases of operations and the shape of server changes.

use super::*;

#[test]
fn update_of_unknown_entity_creates_it_and_delete_of_unknown_is_a_noop() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let created = new_uuid();
    let never = new_uuid();
    let ex = a.sync(
        &app,
        vec![
            change("UPDATE", "Doc", &created, 0, json!({"made": "by update"})),
            change("DELETE", "Doc", &never, 0, Value::Null),
        ],
    );
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 2, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 0);
    assert_eq!(ex.body["conflict_count"], 0);
    let (s, ent) = app.entity("Doc", &created);
    assert_eq!(s, 200);
    assert_eq!(ent["version"], 1);
    assert_eq!(ent["data"], json!({"made": "by update"}));
    assert_eq!(server_version(&app, "Doc", &never), None);

    // B gets the created entity only; no tombstone for something that never existed.
    let ex = b.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![created.clone()]);
    assert_eq!(ch[0]["operation"], "INSERT");
    assert_eq!(ch[0]["version"], 1);

    // Deleting twice: the second delete is a no-op, still counted, version unchanged.
    let ex = a.sync(&app, vec![delete("Doc", &created, 1)]);
    assert_eq!(ex.body["processed_count"], 1);
    let ex = a.sync(&app, vec![delete("Doc", &created, 2)]);
    assert_eq!(ex.body["processed_count"], 1);
    assert_eq!(ex.body["error_count"], 0);
    assert_eq!(server_version(&app, "Doc", &created), Some(2));
}

#[test]
fn server_changes_carry_version_and_null_base_version() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let d = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &u, 0, json!({"k": [1, 2, {"deep": true}], "s": "é"})),
            upsert("Doc", &d, 0, json!({})),
        ],
    ));
    let first = b.sync(&app, vec![]);
    let c0 = first.changes()[0].clone();
    assert_eq!(c0["entity_uuid"], json!(u));
    assert_eq!(c0["operation"], "INSERT");
    assert_eq!(c0["version"], 1);
    assert_eq!(c0["base_version"], Value::Null);
    assert_eq!(c0["data"], json!({"k": [1, 2, {"deep": true}], "s": "é"}));
    ok(&a.sync(
        &app,
        vec![delete("Doc", &d, 1), upsert("Doc", &u, 1, json!({"k": 2}))],
    ));

    let ex = b.sync(&app, vec![]);
    ok(&ex);
    let p = ex.packet.clone().unwrap();
    assert_eq!(p["format"], 1);
    assert_eq!(p["schema_version"], "1.0.0");
    assert_eq!(p["sender_node_id"], json!(app.server_id));
    assert_eq!(p["receiver_node_id"], json!(b.id));
    assert_eq!(p["packet_no"], 2);
    assert_eq!(p["ack_packet_no"], 2);
    assert_eq!(p["more"], false);
    assert!(starsync_protocol::parse_ts(p["created_at"].as_str().unwrap()).is_some());
    let ch = ex.changes();
    assert_eq!(ch.len(), 2);
    let keys = [
        "change_id",
        "entity_type",
        "entity_uuid",
        "operation",
        "base_version",
        "version",
        "updated_at",
        "data",
    ];
    for c in &ch {
        let obj = c.as_object().unwrap();
        for k in keys {
            assert!(obj.contains_key(k), "server change lacks {k}: {c}");
        }
        assert_eq!(c["base_version"], Value::Null, "{c}");
        assert!(c["version"].as_u64().is_some(), "{c}");
        assert!(c["change_id"].as_str().is_some_and(|s| !s.is_empty()));
        let ts = c["updated_at"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && starsync_protocol::parse_ts(ts).is_some(),
            "{ts}"
        );
    }
    let del = ch.iter().find(|c| c["entity_uuid"] == json!(d)).unwrap();
    assert_eq!(del["operation"], "DELETE");
    assert_eq!(del["version"], 2);
    assert_eq!(del["data"], Value::Null);
    let upd = ch.iter().find(|c| c["entity_uuid"] == json!(u)).unwrap();
    assert_eq!(upd["operation"], "UPDATE");
    assert_eq!(upd["version"], 2);
    assert_eq!(upd["data"], json!({"k": 2}));
    assert_eq!(b.version_of("Doc", &u), 2);
}

#[test]
fn status_counters_follow_the_exchanges() {
    let app = TestApp::spawn();
    let mut b = app.register("B");
    let st = app.node_status(&b);
    assert_eq!(st["node_id"], json!(b.id));
    assert_eq!(st["node_code"], "B");
    assert_eq!(st["active"], true);
    assert_eq!(st["sent_packet_no"], 0);
    assert_eq!(st["received_packet_no"], 0);
    assert_eq!(st["acked_packet_no"], 0);
    assert_eq!(st["last_sync_in"], Value::Null);
    assert_eq!(st["last_sync_out"], Value::Null);
    assert_eq!(st["pending_changes"], 0);

    let ts = |v: &Value| {
        let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
        assert!(s.ends_with('Z'), "{s}");
        starsync_protocol::parse_ts(s).unwrap()
    };

    ok(&b.sync(&app, vec![]));
    let s1 = app.node_status(&b);
    assert_eq!(s1["sent_packet_no"], 1);
    assert_eq!(s1["received_packet_no"], 1);
    assert_eq!(s1["acked_packet_no"], 0);
    let in1 = ts(&s1["last_sync_in"]);
    let out1 = ts(&s1["last_sync_out"]);

    ok(&b.sync(&app, vec![]));
    let s2 = app.node_status(&b);
    assert_eq!(s2["sent_packet_no"], 2);
    assert_eq!(s2["received_packet_no"], 2);
    assert_eq!(s2["acked_packet_no"], 1);
    assert!(ts(&s2["last_sync_in"]) > in1, "{s1} {s2}");
    assert!(ts(&s2["last_sync_out"]) > out1, "{s1} {s2}");

    // A duplicate: a new server packet, nothing received, its ack taken.
    let ex = b.post_packet(&app, &b.packet(2, 2, vec![]));
    assert_eq!(ex.body["duplicate"], true);
    let s3 = app.node_status(&b);
    assert_eq!(s3["sent_packet_no"], 3);
    assert_eq!(s3["received_packet_no"], 2);
    assert_eq!(s3["acked_packet_no"], 2);
    assert!(
        ts(&s3["last_sync_in"]) > ts(&s2["last_sync_in"]),
        "{s2} {s3}"
    );
    assert!(
        ts(&s3["last_sync_out"]) > ts(&s2["last_sync_out"]),
        "{s2} {s3}"
    );

    // A stale acknowledgment never moves the counter back.
    let ex = b.post_packet(&app, &b.packet(3, 1, vec![]));
    ok(&ex);
    let s4 = app.node_status(&b);
    assert_eq!(s4["sent_packet_no"], 4);
    assert_eq!(s4["received_packet_no"], 3);
    assert_eq!(s4["acked_packet_no"], 2);
    let ex = b.post_packet(&app, &b.packet(4, 4, vec![]));
    ok(&ex);
    let s5 = app.node_status(&b);
    assert_eq!(s5["acked_packet_no"], 4);
    assert_eq!(s5["received_packet_no"], 4);
    assert_eq!(s5["sent_packet_no"], 5);
    // The answer's packet numbers match the counters.
    let p = ex.packet.unwrap();
    assert_eq!(p["packet_no"], 5);
    assert_eq!(p["ack_packet_no"], 4);
}
