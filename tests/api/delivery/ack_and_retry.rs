//! Acknowledgment and retry.

use super::*;

#[test]
fn unacknowledged_change_is_sent_again_and_never_after_acknowledgment() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let b = app.register("B");
    let u = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &u, 0, json!({"x": 1}))]));

    // Server packet 1 carries the change; B does not acknowledge it.
    let ex = b.post_packet(&app, &b.packet(1, 0, vec![]));
    ok(&ex);
    let p1 = ex.packet.clone().unwrap();
    assert_eq!(p1["packet_no"], 1);
    assert_eq!(uuids(&ex.changes()), vec![u.clone()]);
    assert_eq!(
        pending(&app, &b),
        1,
        "in flight, not acknowledged: still pending"
    );

    // Next exchange still acknowledges nothing: the change is sent again, same state.
    let ex = b.post_packet(&app, &b.packet(2, 0, vec![]));
    ok(&ex);
    assert_eq!(ex.packet.as_ref().unwrap()["packet_no"], 2);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![u.clone()]);
    assert_eq!(ch[0]["version"], 1);
    assert_eq!(ch[0]["data"], json!({"x": 1}));
    assert_eq!(
        ch[0]["change_id"], p1["changes"][0]["change_id"],
        "the same state travels under the same change_id"
    );
    assert_eq!(pending(&app, &b), 1);

    // Acknowledging packet 2 settles it: never sent again.
    let ex = b.post_packet(&app, &b.packet(3, 2, vec![]));
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &b), 0);
    for no in 4..7 {
        let ex = b.post_packet(&app, &b.packet(no, no - 1, vec![]));
        ok(&ex);
        assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    }
    let st = app.node_status(&b);
    assert_eq!(st["acked_packet_no"], 5);
    assert_eq!(st["sent_packet_no"], 6);
}

#[test]
fn acknowledging_an_older_packet_settles_what_it_carried() {
    // Packet 1 and 2 both carry E; acknowledging packet 1 (the one the node applied) settles E.
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let b = app.register("B");
    let u = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &u, 0, json!({"x": 1}))]));
    ok(&b.post_packet(&app, &b.packet(1, 0, vec![])));
    let ex = b.post_packet(&app, &b.packet(2, 0, vec![]));
    assert_eq!(uuids(&ex.changes()), vec![u.clone()]);
    let ex = b.post_packet(&app, &b.packet(3, 1, vec![]));
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &b), 0);
}

#[test]
fn change_made_after_packet_was_built_stays_pending_after_its_ack() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let b = app.register("B");
    let e1 = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &e1, 0, json!({"v": 1}))]));

    // Server packet 1 carries E1 v1.
    let ex = b.post_packet(&app, &b.packet(1, 0, vec![]));
    assert_eq!(uuids(&ex.changes()), vec![e1.clone()]);

    // After packet 1 was built: E1 changes again and E2 appears.
    let e2 = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &e1, 1, json!({"v": 2})),
            upsert("Doc", &e2, 0, json!({"v": 1})),
        ],
    ));
    assert_eq!(pending(&app, &b), 2);

    // B acknowledges packet 1: E1 v2 and E2 stay pending and arrive in the answer.
    let ex = b.post_packet(&app, &b.packet(2, 1, vec![]));
    ok(&ex);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![e1.clone(), e2.clone()]);
    assert_eq!(ch[0]["version"], 2);
    assert_eq!(ch[0]["data"], json!({"v": 2}));
    assert_eq!(ch[1]["version"], 1);
    assert_eq!(pending(&app, &b), 2, "packet 2 is not acknowledged yet");

    // A change between packet 2 and its acknowledgment stays pending too.
    ok(&a.sync(&app, vec![upsert("Doc", &e2, 1, json!({"v": 2}))]));
    let ex = b.post_packet(&app, &b.packet(3, 2, vec![]));
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![e2.clone()]);
    assert_eq!(ch[0]["version"], 2);
    let ex = b.post_packet(&app, &b.packet(4, 3, vec![]));
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &b), 0);
}

#[test]
fn lost_server_packet_is_repaired_by_the_next_one() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let e1 = new_uuid();
    let e2 = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &e1, 0, json!({"v": 1}))]));

    // Server packet 1 is "lost": B never applies it.
    let lost = b.post_packet(&app, &b.packet(1, 0, vec![]));
    ok(&lost);
    assert_eq!(uuids(&lost.changes()), vec![e1.clone()]);
    b.next_packet_no = 2;

    // More happens meanwhile.
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &e2, 0, json!({"v": 1})),
            upsert("Doc", &e1, 1, json!({"v": 2})),
        ],
    ));

    // Server packet 2 carries everything B has not acknowledged, oldest first, current state.
    let ex = b.sync(&app, vec![]);
    ok(&ex);
    assert_eq!(ex.packet.as_ref().unwrap()["packet_no"], 2);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![e2.clone(), e1.clone()]);
    assert_eq!(ch[1]["version"], 2);
    assert_eq!(ch[1]["data"], json!({"v": 2}));
    assert_eq!(b.entities.len(), 2);
    assert_eq!(b.version_of("Doc", &e1), 2);
    assert_eq!(b.version_of("Doc", &e2), 1);

    // Acknowledging packet 2 (never packet 1) settles both.
    let ex = b.sync(&app, vec![]);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &b), 0);
    assert_eq!(app.node_status(&b)["acked_packet_no"], 2);
}

#[test]
fn conflict_answer_queued_after_a_packet_stays_pending_after_its_ack() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let e = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &e, 0, json!({"v": 1}))]));
    ok(&b.sync(&app, vec![])); // server packet 1: e v1
    ok(&a.sync(&app, vec![upsert("Doc", &e, 1, json!({"v": 2}))]));
    let ex = b.sync(&app, vec![]); // server packet 2: e v2
    assert_eq!(uuids(&ex.changes()), vec![e.clone()]);
    assert_eq!(b.acked, 2);

    // B kept a local edit based on v1: its packet acknowledges 2 and carries the edit. The ack
    // settles packet 2, then the edit loses (server_wins) and e is queued for B again.
    let ex = b.post_packet(
        &app,
        &b.packet(3, 2, vec![upsert("Doc", &e, 1, json!({"v": "B"}))]),
    );
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![e.clone()]);
    assert_eq!(ch[0]["version"], 2);
    assert_eq!(ch[0]["data"], json!({"v": 2}));
    assert_eq!(pending(&app, &b), 1);

    // Not acknowledged: sent again. Acknowledged: gone.
    let ex = b.post_packet(&app, &b.packet(4, 2, vec![]));
    assert_eq!(uuids(&ex.changes()), vec![e.clone()]);
    let ex = b.post_packet(&app, &b.packet(5, 4, vec![]));
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &b), 0);
    // A never hears of B's losing edit.
    assert!(a.sync(&app, vec![]).changes().is_empty());
}

#[test]
fn admin_writes_reach_every_node() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let (s, body) = app.put(
        &format!("/api/sync/entities/Setting/{u}"),
        Some(ADMIN),
        &json!({"data": {"by": "admin"}}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 1);
    for n in [&mut a, &mut b] {
        let ex = n.sync(&app, vec![]);
        let ch = ex.changes();
        assert_eq!(uuids(&ch), vec![u.clone()], "{}", n.code);
        assert_eq!(ch[0]["operation"], "INSERT");
        assert_eq!(ch[0]["version"], 1);
        assert_eq!(ch[0]["data"], json!({"by": "admin"}));
        assert!(n.sync(&app, vec![]).changes().is_empty());
    }
    let (s, body) = app.delete(&format!("/api/sync/entities/Setting/{u}"), Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    for n in [&mut a, &mut b] {
        let ex = n.sync(&app, vec![]);
        let ch = ex.changes();
        assert_eq!(uuids(&ch), vec![u.clone()], "{}", n.code);
        assert_eq!(ch[0]["operation"], "DELETE");
        assert_eq!(ch[0]["version"], 2);
    }
}
