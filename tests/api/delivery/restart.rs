//! Restart.

use super::*;

#[test]
fn restart_keeps_packet_numbers_acknowledgments_and_queues() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let e1 = new_uuid();
    let e2 = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &e1, 0, json!({"v": 1})),
            upsert("Doc", &e2, 0, json!({"v": 1})),
        ],
    ));
    ok(&b.sync(&app, vec![]));
    // The second exchange acknowledges server packet 1 (e1, e2); server packet 2 (empty) is
    // not acknowledged, and e3 and an update of e1 become pending.
    ok(&b.sync(&app, vec![]));
    let e3 = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &e3, 0, json!({"v": 1})),
            upsert("Doc", &e1, 1, json!({"v": 2})),
        ],
    ));
    let before_b = counters(&app, &b);
    let before_a = counters(&app, &a);
    assert_eq!(before_b["sent_packet_no"], 2);
    assert_eq!(before_b["received_packet_no"], 2);
    assert_eq!(before_b["acked_packet_no"], 1);
    assert_eq!(before_b["pending_changes"], 2);

    let server_id = app.server_id.clone();
    let app = app.restart();
    assert_eq!(app.server_id, server_id, "the hub keeps its identity");
    assert_eq!(counters(&app, &b), before_b);
    assert_eq!(counters(&app, &a), before_a);

    // Resending the last packet is still a duplicate; skipping one is still a gap.
    let dup = b.post_packet(&app, &b.packet(2, 1, vec![]));
    ok(&dup);
    assert_eq!(dup.body["duplicate"], true);
    assert_eq!(dup.packet.as_ref().unwrap()["packet_no"], 3);
    let gap = b.post_packet(&app, &b.packet(4, 1, vec![]));
    assert_eq!(gap.status, 409);
    assert_eq!(gap.body["expected_packet_no"], 3);

    // The next exchange gets exactly the pending changes under the next numbers.
    let ex = b.sync(&app, vec![]);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], false);
    let p = ex.packet.as_ref().unwrap();
    assert_eq!(p["packet_no"], 4);
    assert_eq!(p["ack_packet_no"], 3);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![e3.clone(), e1.clone()]);
    assert_eq!(ch[1]["version"], 2);
    assert!(b.sync(&app, vec![]).changes().is_empty());

    // A continues with its own numbers too.
    let ex = a.sync(&app, vec![]);
    ok(&ex);
    assert_eq!(ex.body["duplicate"], false);
    assert_eq!(ex.packet.as_ref().unwrap()["packet_no"], 3);
    let st = app.node_status(&a);
    assert_eq!(st["received_packet_no"], 3);
    assert_eq!(st["acked_packet_no"], 2);
}
