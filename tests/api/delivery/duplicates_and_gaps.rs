//! Duplicates and gaps.

use super::*;

#[test]
fn duplicate_node_packet_is_acknowledged_but_not_applied_again() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let b = app.register("B");
    let from_a = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &from_a, 0, json!({"by": "A"}))]));

    let x = new_uuid();
    let p1 = b.packet(1, 0, vec![upsert("Doc", &x, 0, json!({"v": 1}))]);
    let ex = b.post_packet(&app, &p1);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], false);
    assert_eq!(ex.body["processed_count"], 1);
    assert_eq!(uuids(&ex.changes()), vec![from_a.clone()]);

    let p2 = b.packet(2, 0, vec![upsert("Doc", &x, 1, json!({"v": 2}))]);
    let ex = b.post_packet(&app, &p2);
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 1);
    assert_eq!(server_version(&app, "Doc", &x), Some(2));

    // The identical packet 2 again: a duplicate, nothing applied, still acknowledged.
    let ex = b.post_packet(&app, &p2);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], true, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 0);
    assert_eq!(ex.body["error_count"], 0);
    assert_eq!(ex.packet.as_ref().unwrap()["ack_packet_no"], 2);
    assert_eq!(server_version(&app, "Doc", &x), Some(2));
    // An older packet too.
    let ex = b.post_packet(&app, &p1);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], true);
    assert_eq!(ex.body["processed_count"], 0);
    assert_eq!(ex.packet.as_ref().unwrap()["ack_packet_no"], 2);
    let (_, ent) = app.entity("Doc", &x);
    assert_eq!(ent["version"], 2);
    assert_eq!(ent["data"], json!({"v": 2}));

    let st = app.node_status(&b);
    assert_eq!(st["received_packet_no"], 2);
    let sent = st["sent_packet_no"].as_u64().unwrap();
    assert_eq!(
        sent, 4,
        "every answer, duplicates included, is a new server packet"
    );
    assert_eq!(st["acked_packet_no"], 0);
    assert_eq!(st["pending_changes"], 1);

    // A duplicate whose acknowledgment is newer: the acknowledgment is taken.
    let mut resent = p2.clone();
    resent["ack_packet_no"] = json!(sent);
    let ex = b.post_packet(&app, &resent);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], true);
    assert_eq!(ex.body["processed_count"], 0);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    let st = app.node_status(&b);
    assert_eq!(st["acked_packet_no"], sent);
    assert_eq!(st["pending_changes"], 0);
    assert_eq!(st["received_packet_no"], 2);
    assert_eq!(server_version(&app, "Doc", &x), Some(2));

    // Delivery continues with the next number; A got x only once at version 2.
    let ex = b.post_packet(&app, &b.packet(3, sent + 1, vec![]));
    ok(&ex);
    assert_eq!(ex.body["duplicate"], false);
    let ex = a.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![x.clone()]);
    assert_eq!(ch[0]["version"], 2);
}

#[test]
fn packet_gap_is_rejected_with_the_expected_number_and_changes_nothing() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");

    // A fresh node that starts at 2.
    let u = new_uuid();
    let ex = b.post_packet(&app, &b.packet(2, 0, vec![upsert("Doc", &u, 0, json!({}))]));
    assert_eq!(ex.status, 409, "{}", ex.body);
    assert_eq!(ex.body["error"], "packet_gap");
    assert_eq!(ex.body["expected_packet_no"], 1);
    assert!(ex.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(server_version(&app, "Doc", &u), None);

    let from_a = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &from_a, 0, json!({}))]));
    ok(&b.sync(&app, vec![]));
    ok(&b.sync(&app, vec![]));
    let before = counters(&app, &b);
    assert_eq!(before["received_packet_no"], 2);

    // Packet 4 after 2 (ack 2 would be valid): rejected, nothing changed — not even the ack.
    ok(&a.sync(&app, vec![upsert("Doc", &from_a, 1, json!({"v": 2}))]));
    let before = counters(&app, &b);
    let ex = b.post_packet(&app, &b.packet(4, 2, vec![upsert("Doc", &u, 0, json!({}))]));
    assert_eq!(ex.status, 409, "{}", ex.body);
    assert_eq!(ex.body["error"], "packet_gap");
    assert_eq!(ex.body["expected_packet_no"], 3);
    assert_eq!(counters(&app, &b), before);
    assert_eq!(server_version(&app, "Doc", &u), None);

    // Far ahead.
    let ex = b.post_packet(&app, &b.packet(1000, 2, vec![]));
    assert_eq!(ex.status, 409);
    assert_eq!(ex.body["expected_packet_no"], 3);
    assert_eq!(counters(&app, &b), before);

    // The expected number works.
    let ex = b.sync(&app, vec![upsert("Doc", &u, 0, json!({}))]);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], false);
    assert_eq!(ex.body["processed_count"], 1);
    assert_eq!(uuids(&ex.changes()), vec![from_a.clone()]);
    assert_eq!(server_version(&app, "Doc", &u), Some(1));
}
