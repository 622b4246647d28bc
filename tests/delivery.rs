//! Delivery rules (PROTOCOL §3–4), black-box over HTTP: echo suppression, acknowledgment and
//! retry, cumulative server packets, duplicates, gaps, batching with `more`, initial sync,
//! one queue entry per entity, disabled nodes, restarts and concurrent exchanges.
mod common;
use common::*;

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Barrier};

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// The entity uuids of a list of server changes, in packet order.
fn uuids(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
        .collect()
}

/// The server's version of an entity (None when the server does not have it).
fn server_version(app: &TestApp, t: &str, u: &str) -> Option<u64> {
    let (s, body) = app.entity(t, u);
    match s {
        200 => Some(body["version"].as_u64().unwrap()),
        404 => None,
        other => panic!("entity {t}/{u}: {other} {body}"),
    }
}

/// The delivery counters of a node's status (what a rejected request must leave alone).
fn counters(app: &TestApp, node: &TestNode) -> Value {
    let s = app.node_status(node);
    json!({
        "sent_packet_no": s["sent_packet_no"],
        "received_packet_no": s["received_packet_no"],
        "acked_packet_no": s["acked_packet_no"],
        "last_sync_in": s["last_sync_in"],
        "last_sync_out": s["last_sync_out"],
        "pending_changes": s["pending_changes"],
    })
}

fn pending(app: &TestApp, node: &TestNode) -> u64 {
    app.node_status(node)["pending_changes"].as_u64().unwrap()
}

/// Posts a packet from any thread (the harness's `TestApp` stays on the test thread).
fn post_exchange(url: &str, token: &str, packet: &Value) -> (u16, Value) {
    let body = json!({ "packet_data": encode(packet) }).to_string();
    let r = ureq::post(url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json")
        .send_string(&body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ok(ex: &Exchange) {
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["success"], true, "{}", ex.body);
}

/// Creates `n` entities of type `Item` on `node`, in one packet, and returns their uuids in
/// the order the server applies them.
fn create_items(app: &TestApp, node: &mut TestNode, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| new_uuid()).collect();
    let changes = ids
        .iter()
        .enumerate()
        .map(|(i, u)| upsert("Item", u, 0, json!({ "n": i })))
        .collect();
    let ex = node.sync(app, changes);
    ok(&ex);
    assert_eq!(ex.body["processed_count"], n as u64, "{}", ex.body);
    ids
}

// ---------------------------------------------------------------------------------------------
// Echo suppression
// ---------------------------------------------------------------------------------------------

#[test]
fn author_never_receives_its_own_change_back() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();

    let ex = a.sync(&app, vec![upsert("Note", &u, 0, json!({"t": "v1"}))]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    // A edits its own entity twice more; still nothing comes back.
    let ex = a.sync(&app, vec![upsert("Note", &u, 1, json!({"t": "v2"}))]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    let ex = a.sync(&app, vec![upsert("Note", &u, 2, json!({"t": "v3"}))]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(pending(&app, &a), 0);
    assert_eq!(server_version(&app, "Note", &u), Some(3));

    // B gets the latest state once.
    let ex = b.sync(&app, vec![]);
    assert_eq!(uuids(&ex.changes()), vec![u.clone()]);
    assert_eq!(ex.changes()[0]["version"], 3);
    assert_eq!(ex.changes()[0]["data"], json!({"t": "v3"}));

    // Empty exchanges by A: still nothing of its own.
    for _ in 0..2 {
        let ex = a.sync(&app, vec![]);
        assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    }

    // Suppression is per author, not per entity: B's edit reaches A.
    let ex = b.sync(&app, vec![upsert("Note", &u, 3, json!({"t": "by B"}))]);
    ok(&ex);
    assert!(
        ex.changes().is_empty(),
        "B got its own change: {:?}",
        ex.changes()
    );
    let ex = a.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![u.clone()]);
    assert_eq!(ch[0]["version"], 4);
    assert_eq!(ch[0]["operation"], "UPDATE");
    assert_eq!(ch[0]["data"], json!({"t": "by B"}));

    // A deletes: B gets the tombstone, A does not.
    let ex = a.sync(&app, vec![delete("Note", &u, 4)]);
    ok(&ex);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    let ex = b.sync(&app, vec![]);
    assert_eq!(uuids(&ex.changes()), vec![u.clone()]);
    assert_eq!(ex.changes()[0]["operation"], "DELETE");
    assert!(a.sync(&app, vec![]).changes().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Acknowledgment and retry
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Duplicates and gaps
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Batching and `more`
// ---------------------------------------------------------------------------------------------

/// Exchanges empty packets until `more` is false; returns (changes per packet, more flags).
fn drain_batches(app: &TestApp, node: &mut TestNode) -> (Vec<Vec<Value>>, Vec<bool>) {
    let mut batches = Vec::new();
    let mut mores = Vec::new();
    loop {
        let ex = node.sync(app, vec![]);
        ok(&ex);
        batches.push(ex.changes());
        mores.push(ex.more());
        if !ex.more() {
            return (batches, mores);
        }
        assert!(batches.len() < 100, "more never ends");
    }
}

#[test]
fn batches_of_default_size_deliver_every_entity_once_in_order() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let mut order = create_items(&app, &mut a, 130);
    order.extend(create_items(&app, &mut a, 130));
    assert_eq!(pending(&app, &b), 260);

    let (batches, mores) = drain_batches(&app, &mut b);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![100, 100, 60]);
    assert_eq!(mores, vec![true, true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(
        uuids(&all),
        order,
        "every entity once, in order of application"
    );
    for c in &all {
        assert_eq!(c["operation"], "INSERT");
        assert_eq!(c["version"], 1);
    }
    // The last packet is acknowledged by the next exchange: nothing more.
    let ex = b.sync(&app, vec![]);
    assert!(ex.changes().is_empty());
    assert!(!ex.more());
    assert_eq!(pending(&app, &b), 0);
    assert_eq!(b.entities.len(), 260);

    // A node registered afterwards gets the same through initial synchronization.
    let mut c = app.register("C");
    assert_eq!(pending(&app, &c), 260);
    let (batches, mores) = drain_batches(&app, &mut c);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![100, 100, 60]);
    assert_eq!(mores, vec![true, true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(uuids(&all), order);
    assert!(all.iter().all(|c| c["operation"] == "INSERT"));
    assert!(c.sync(&app, vec![]).changes().is_empty());
}

#[test]
fn batch_size_from_env_limits_packets_and_sets_more() {
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "7")]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    let mut order = Vec::new();
    for _ in 0..3 {
        order.extend(create_items(&app, &mut a, 10));
    }
    let (batches, mores) = drain_batches(&app, &mut b);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    assert_eq!(sizes, vec![7, 7, 7, 7, 2]);
    assert_eq!(mores, vec![true, true, true, true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(uuids(&all), order);

    // Exactly a multiple of the batch size: the last full packet says more = false.
    let order: Vec<String> = create_items(&app, &mut a, 14);
    let (batches, mores) = drain_batches(&app, &mut b);
    let sizes: Vec<usize> = batches.iter().map(|b| b.len()).collect();
    // The first exchange also acknowledges the previous drain's last packet.
    assert_eq!(sizes, vec![7, 7]);
    assert_eq!(mores, vec![true, false]);
    let all: Vec<Value> = batches.into_iter().flatten().collect();
    assert_eq!(uuids(&all), order);
    assert!(b.sync(&app, vec![]).changes().is_empty());
    assert_eq!(pending(&app, &b), 0);
    assert_eq!(b.entities.len(), 44);
}

#[test]
fn changes_during_a_long_drain_arrive_at_their_latest_position_once() {
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "7")]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    let e = create_items(&app, &mut a, 20);

    let ex = b.sync(&app, vec![]);
    assert_eq!(uuids(&ex.changes()), e[0..7].to_vec());
    assert!(ex.more());

    // e0 was delivered (not yet acknowledged), e10 not yet: both change.
    ok(&a.sync(
        &app,
        vec![
            upsert("Item", &e[0], 1, json!({"n": 0, "v": 2})),
            upsert("Item", &e[10], 1, json!({"n": 10, "v": 2})),
        ],
    ));

    let ex = b.sync(&app, vec![]);
    let mut expect: Vec<String> = vec![e[7].clone(), e[8].clone(), e[9].clone()];
    expect.extend(e[11..15].iter().cloned());
    assert_eq!(uuids(&ex.changes()), expect);
    assert!(ex.more());

    let ex = b.sync(&app, vec![]);
    let mut expect: Vec<String> = e[15..20].to_vec();
    expect.push(e[0].clone());
    expect.push(e[10].clone());
    let ch = ex.changes();
    assert_eq!(uuids(&ch), expect);
    assert!(!ex.more());
    assert_eq!(ch[5]["version"], 2);
    assert_eq!(ch[5]["operation"], "UPDATE");
    assert_eq!(ch[6]["version"], 2);
    assert_eq!(ch[6]["data"], json!({"n": 10, "v": 2}));

    assert!(b.sync(&app, vec![]).changes().is_empty());
    assert_eq!(b.entities.len(), 20);
    assert_eq!(b.version_of("Item", &e[0]), 2);
    assert_eq!(b.version_of("Item", &e[10]), 2);
}

// ---------------------------------------------------------------------------------------------
// Initial synchronization and queue contents
// ---------------------------------------------------------------------------------------------

#[test]
fn late_node_gets_every_live_entity_but_no_old_tombstones() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let live1 = new_uuid();
    let gone = new_uuid();
    let live2 = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &live1, 0, json!({"n": 1})),
            upsert("Doc", &gone, 0, json!({"n": 2})),
            upsert("Task", &live2, 0, json!({"n": 3})),
        ],
    ));
    ok(&a.sync(
        &app,
        vec![
            delete("Doc", &gone, 1),
            upsert("Task", &live2, 1, json!({"n": 3, "v": 2})),
        ],
    ));

    let mut c = app.register("C");
    assert_eq!(
        pending(&app, &c),
        2,
        "two live entities wait for the new node"
    );
    let ex = c.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![live1.clone(), live2.clone()]);
    for x in &ch {
        assert_eq!(x["operation"], "INSERT", "{x}");
        assert!(x["data"].is_object());
        assert_eq!(x["base_version"], Value::Null);
    }
    assert_eq!(ch[0]["entity_type"], "Doc");
    assert_eq!(ch[0]["version"], 1);
    assert_eq!(ch[1]["entity_type"], "Task");
    assert_eq!(ch[1]["version"], 2);
    assert_eq!(ch[1]["data"], json!({"n": 3, "v": 2}));
    assert!(c.sync(&app, vec![]).changes().is_empty());
    assert_eq!(pending(&app, &c), 0);

    // An entity C holds is deleted later: C gets the DELETE.
    ok(&a.sync(&app, vec![delete("Doc", &live1, 1)]));
    assert_eq!(pending(&app, &c), 1);
    let ex = c.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![live1.clone()]);
    assert_eq!(ch[0]["operation"], "DELETE");
    assert_eq!(ch[0]["version"], 2);
    assert_eq!(ch[0]["data"], Value::Null);
    assert_eq!(
        c.entities[&("Doc".to_string(), live1.clone())].1,
        Value::Null
    );
    assert!(c.sync(&app, vec![]).changes().is_empty());
}

#[test]
fn one_pending_entry_per_entity_with_the_latest_version() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let e = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &e, 0, json!({"v": 1}))]));
    b.drain(&app);
    ok(&b.sync(&app, vec![]));
    assert_eq!(b.version_of("Doc", &e), 1);

    // Three updates of e (in two packets) and a new f updated twice, before B syncs.
    let f = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &e, 1, json!({"v": 2})),
            upsert("Doc", &f, 0, json!({"v": 1})),
        ],
    ));
    ok(&a.sync(
        &app,
        vec![
            upsert("Doc", &e, 2, json!({"v": 3})),
            upsert("Doc", &f, 1, json!({"v": 2})),
            upsert("Doc", &e, 3, json!({"v": 4})),
            upsert("Doc", &f, 2, json!({"v": 3})),
        ],
    ));
    assert_eq!(pending(&app, &b), 2);

    let ex = b.sync(&app, vec![]);
    let ch = ex.changes();
    assert_eq!(uuids(&ch), vec![e.clone(), f.clone()]);
    assert_eq!(ch[0]["operation"], "UPDATE");
    assert_eq!(ch[0]["version"], 4);
    assert_eq!(ch[0]["data"], json!({"v": 4}));
    assert_eq!(ch[1]["operation"], "INSERT", "f is new to B");
    assert_eq!(ch[1]["version"], 3);
    assert_eq!(ch[1]["data"], json!({"v": 3}));
    assert!(b.sync(&app, vec![]).changes().is_empty());
}

#[test]
fn pending_changes_counts_entities_waiting() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let ids = create_items(&app, &mut a, 5);
    assert_eq!(pending(&app, &a), 0, "the author waits for nothing");
    assert_eq!(pending(&app, &b), 5);

    // The node's own token reads the same number.
    let (s, own) = app.get(&format!("/api/sync/status/{}", b.id), Some(&b.token));
    assert_eq!(s, 200, "{own}");
    assert_eq!(own["pending_changes"], 5);
    // The admin views agree.
    let (_, list) = app.get("/api/sync/nodes", Some(ADMIN));
    let row = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == json!(b.id))
        .unwrap()
        .clone();
    assert_eq!(row["pending_changes"], 5);
    let (_, stats) = app.get("/api/sync/status", Some(ADMIN));
    assert_eq!(stats["pending_counts"][&b.id]["pending_changes"], 5);
    assert_eq!(stats["pending_counts"][&a.id]["pending_changes"], 0);

    // Delivered but not acknowledged: still waiting.
    let ex = b.post_packet(&app, &b.packet(1, 0, vec![]));
    assert_eq!(ex.changes().len(), 5);
    assert_eq!(pending(&app, &b), 5);
    b.next_packet_no = 2;
    b.apply(ex.packet.as_ref().unwrap());
    ok(&b.sync(&app, vec![]));
    assert_eq!(pending(&app, &b), 0);

    // Several updates of two entities: two entries.
    ok(&a.sync(
        &app,
        vec![
            upsert("Item", &ids[1], 1, json!({"v": 2})),
            upsert("Item", &ids[1], 2, json!({"v": 3})),
            upsert("Item", &ids[3], 1, json!({"v": 2})),
        ],
    ));
    assert_eq!(pending(&app, &b), 2);
    // B's own change to a waiting entity drops B's entry (B holds that state).
    ok(&b.sync(&app, vec![upsert("Item", &ids[3], 2, json!({"v": "B"}))]));
    let st = app.node_status(&b);
    // The answer to that exchange carried ids[1] and is not acknowledged yet.
    assert_eq!(st["pending_changes"], 1);
    ok(&b.sync(&app, vec![]));
    assert_eq!(pending(&app, &b), 0);
    assert_eq!(pending(&app, &a), 1, "A waits for B's version of ids[3]");
}

#[test]
fn disabled_node_queue_keeps_filling_and_is_delivered_after_enable() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    ok(&b.sync(&app, vec![]));

    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/disable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["active"], false);

    let ids = create_items(&app, &mut a, 3);
    let e = new_uuid();
    ok(&a.sync(&app, vec![upsert("Doc", &e, 0, json!({"v": 1}))]));
    ok(&a.sync(&app, vec![upsert("Doc", &e, 1, json!({"v": 2}))]));

    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 401, "{}", ex.body);
    assert_eq!(ex.body["error"], "unauthorized");
    let st = app.node_status(&b);
    assert_eq!(st["active"], false);
    assert_eq!(st["pending_changes"], 4);
    assert_eq!(st["received_packet_no"], 1);

    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/enable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["active"], true);
    assert_eq!(body["pending_changes"], 4);

    let ex = b.sync(&app, vec![]);
    ok(&ex);
    assert_eq!(ex.packet.as_ref().unwrap()["packet_no"], 2);
    let mut expect = ids.clone();
    expect.push(e.clone());
    assert_eq!(uuids(&ex.changes()), expect);
    assert_eq!(ex.changes()[3]["version"], 2);
    assert!(b.sync(&app, vec![]).changes().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_exchanges_of_one_node_apply_exactly_once_and_never_share_numbers() {
    const THREADS: usize = 8;
    let app = TestApp::spawn();
    let b = app.register("B");
    let url = app.url("/api/sync/exchange");

    // Round 1: the same packet number with different changes, all at once.
    let ids: Vec<String> = (0..THREADS).map(|_| new_uuid()).collect();
    let packets: Vec<Value> = ids
        .iter()
        .map(|u| b.packet(1, 0, vec![upsert("Doc", u, 0, json!({"u": u}))]))
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = packets
            .iter()
            .map(|p| {
                let barrier = barrier.clone();
                let url = url.clone();
                let token = b.token.clone();
                s.spawn(move || {
                    barrier.wait();
                    post_exchange(&url, &token, p)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut server_numbers = Vec::new();
    let mut applied = Vec::new();
    for (i, (s, body)) in results.iter().enumerate() {
        assert!(*s == 200 || *s == 409, "{s} {body}");
        if *s == 409 {
            assert_eq!(body["error"], "packet_gap");
            continue;
        }
        let p = decode(body["packet_data"].as_str().unwrap());
        server_numbers.push(p["packet_no"].as_u64().unwrap());
        if body["duplicate"] == false {
            assert_eq!(body["processed_count"], 1);
            applied.push(i);
        } else {
            assert_eq!(body["processed_count"], 0);
        }
    }
    assert_eq!(applied.len(), 1, "exactly one copy of packet 1 is applied");
    for (i, u) in ids.iter().enumerate() {
        let v = server_version(&app, "Doc", u);
        if i == applied[0] {
            assert_eq!(v, Some(1));
        } else {
            assert_eq!(v, None, "a duplicate's change was applied");
        }
    }
    let distinct: HashSet<u64> = server_numbers.iter().copied().collect();
    assert_eq!(distinct.len(), server_numbers.len(), "{server_numbers:?}");
    let st = app.node_status(&b);
    assert_eq!(st["received_packet_no"], 1);
    assert_eq!(st["sent_packet_no"], server_numbers.len() as u64);

    // Round 2: consecutive numbers at once; each thread resends its packet after a gap.
    let ids2: Vec<String> = (0..THREADS).map(|_| new_uuid()).collect();
    let packets: Vec<Value> = ids2
        .iter()
        .enumerate()
        .map(|(i, u)| b.packet(2 + i as u64, 0, vec![upsert("Doc", u, 0, json!({}))]))
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let results: Vec<Vec<(u16, Value)>> = std::thread::scope(|s| {
        let handles: Vec<_> = packets
            .iter()
            .map(|p| {
                let barrier = barrier.clone();
                let url = url.clone();
                let token = b.token.clone();
                s.spawn(move || {
                    barrier.wait();
                    let mut answers = Vec::new();
                    for _ in 0..5000 {
                        let (s, body) = post_exchange(&url, &token, p);
                        let done = s == 200;
                        answers.push((s, body));
                        if done {
                            return answers;
                        }
                        std::thread::yield_now();
                    }
                    panic!("packet never accepted: {:?}", answers.last());
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answers in &results {
        for (s, body) in answers {
            match s {
                200 => {
                    assert_eq!(body["duplicate"], false, "{body}");
                    assert_eq!(body["processed_count"], 1);
                    let p = decode(body["packet_data"].as_str().unwrap());
                    server_numbers.push(p["packet_no"].as_u64().unwrap());
                }
                409 => assert_eq!(body["error"], "packet_gap", "{body}"),
                other => panic!("{other} {body}"),
            }
        }
    }
    let distinct: HashSet<u64> = server_numbers.iter().copied().collect();
    assert_eq!(distinct.len(), server_numbers.len(), "{server_numbers:?}");
    let st = app.node_status(&b);
    assert_eq!(st["received_packet_no"], 1 + THREADS as u64);
    assert_eq!(st["sent_packet_no"], server_numbers.len() as u64);
    let expect: HashSet<u64> = (1..=server_numbers.len() as u64).collect();
    assert_eq!(
        distinct, expect,
        "server numbers are consecutive, none skipped"
    );
    for u in &ids2 {
        assert_eq!(server_version(&app, "Doc", u), Some(1));
    }
}

// ---------------------------------------------------------------------------------------------
// Edge cases of operations and the shape of server changes
// ---------------------------------------------------------------------------------------------

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
    assert!(starsync::protocol::parse_ts(p["created_at"].as_str().unwrap()).is_some());
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
            ts.ends_with('Z') && starsync::protocol::parse_ts(ts).is_some(),
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
        starsync::protocol::parse_ts(s).unwrap()
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
    assert!(ts(&s2["last_sync_in"]) >= in1);
    assert!(ts(&s2["last_sync_out"]) >= out1);

    // A duplicate: a new server packet, nothing received, its ack taken.
    let ex = b.post_packet(&app, &b.packet(2, 2, vec![]));
    assert_eq!(ex.body["duplicate"], true);
    let s3 = app.node_status(&b);
    assert_eq!(s3["sent_packet_no"], 3);
    assert_eq!(s3["received_packet_no"], 2);
    assert_eq!(s3["acked_packet_no"], 2);
    assert!(ts(&s3["last_sync_in"]) >= ts(&s2["last_sync_in"]));
    assert!(ts(&s3["last_sync_out"]) >= ts(&s2["last_sync_out"]));

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
