//! Initial synchronization and queue contents.

use super::*;

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
