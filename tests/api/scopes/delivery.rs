//! Delivery with scopes (PROTOCOL §10): a node's queue holds its scopes' entities (plus global
//! types, filtered by its types); scope moves, gained and lost scopes, types changes, and
//! conflict answers.

use super::*;

/// A DELETE that says "it left your view": no data, no version.
fn assert_gone(c: &Value) {
    assert_eq!(c["operation"], "DELETE", "{c}");
    assert_eq!(c["data"], Value::Null, "{c}");
    assert_eq!(c["version"], Value::Null, "{c}");
}

#[test]
fn a_queue_holds_its_scopes_and_global_types_filtered_by_its_types() {
    let app = scoped_app();
    let f1 = new_uuid();
    let f2 = new_uuid();
    let f2_note = new_uuid();
    let none = new_uuid();
    let country = new_uuid();
    admin_put(&app, "Doc", &f1, json!({"tenant_id": "fam-1"}));
    admin_put(&app, "Doc", &f2, json!({"tenant_id": "fam-2"}));
    admin_put(&app, "Note", &f2_note, json!({"tenant_id": "fam-2"}));
    admin_put(&app, "Doc", &none, json!({"title": "no scope value"}));
    admin_put(&app, "Country", &country, json!({"name": "FR"}));
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let mut b = node_with(&app, "B", &["fam-2"], Some(&["Doc"]));
    let mut s = node_with(&app, "S", &["*"], None);
    let mut n = app.register("N");
    assert_eq!(
        ids(&a.drain(&app)),
        sorted(vec![f1.clone(), country.clone()])
    );
    assert_eq!(ids(&b.drain(&app)), vec![f2.clone()]);
    // Only `*` sees an entity without a scope value.
    assert_eq!(
        ids(&s.drain(&app)),
        sorted(vec![f1, f2, f2_note, none, country.clone()])
    );
    assert_eq!(ids(&n.drain(&app)), vec![country]);
}

#[test]
fn a_scope_move_deletes_for_the_old_scope_and_sends_the_state_to_the_new() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let mut b = node_with(&app, "B", &["fam-2"], None);
    let mut m = node_with(&app, "M", &["fam-1", "fam-2"], None);
    let x = new_uuid();
    a.sync(
        &app,
        vec![upsert("Doc", &x, 0, json!({"tenant_id": "fam-1", "t": 1}))],
    );
    assert_eq!(ids(&m.drain(&app)), vec![x.clone()]);
    assert!(b.drain(&app).is_empty());
    a.drain(&app);

    // The admin moves it to fam-2.
    admin_put(&app, "Doc", &x, json!({"tenant_id": "fam-2", "t": 2}));
    let got = a.drain(&app);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_gone(&got[0]);
    assert_eq!(a.entities[&("Doc".to_string(), x.clone())].1, Value::Null);
    let got = b.drain(&app);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"]["t"], 2);
    let got = m.drain(&app);
    assert_eq!((got.len(), &got[0]["operation"]), (1, &json!("UPDATE")));

    // M (both scopes) moves it back: B loses it, A gets it.
    let ex = m.sync(
        &app,
        vec![upsert("Doc", &x, 2, json!({"tenant_id": "fam-1", "t": 3}))],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    let got = b.drain(&app);
    assert_eq!(got.len(), 1);
    assert_gone(&got[0]);
    let got = a.drain(&app);
    assert_eq!((got.len(), &got[0]["data"]["t"]), (1, &json!(3)));
    // And nothing comes twice.
    assert!(a.drain(&app).is_empty() && b.drain(&app).is_empty());
}

#[test]
fn a_gained_scope_delivers_its_live_entities_without_old_tombstones() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let live: Vec<String> = (0..4).map(|_| new_uuid()).collect();
    for u in &live {
        admin_put(&app, "Doc", u, json!({"tenant_id": "fam-2"}));
    }
    let dead = new_uuid();
    admin_put(&app, "Doc", &dead, json!({"tenant_id": "fam-2"}));
    assert_eq!(
        app.delete(&format!("/api/sync/entities/Doc/{dead}"), Some(ADMIN))
            .0,
        200
    );
    assert!(a.drain(&app).is_empty());

    let (s, n) = app.patch(
        &format!("/api/sync/nodes/{}", a.id),
        Some(ADMIN),
        &json!({"scopes": ["fam-1", "fam-2"]}),
    );
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["pending_changes"], 4, "{n}");
    let got = a.drain(&app);
    assert_eq!(ids(&got), sorted(live));
    assert!(got.iter().all(|c| c["operation"] == "INSERT"), "{got:?}");
    // Acknowledged, nothing is left.
    assert!(a.sync(&app, vec![]).changes().is_empty());
    assert_eq!(app.node_status(&a)["pending_changes"], 0);
}

#[test]
fn a_lost_scope_delivers_deletes_and_nothing_more_of_it() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1", "fam-2"], None);
    let mut lost: Vec<String> = (0..3).map(|_| new_uuid()).collect();
    for u in &lost {
        admin_put(&app, "Doc", u, json!({"tenant_id": "fam-2"}));
    }
    let kept = new_uuid();
    admin_put(&app, "Doc", &kept, json!({"tenant_id": "fam-1"}));
    assert_eq!(a.drain(&app).len(), 4);
    assert!(a.sync(&app, vec![]).changes().is_empty(), "acknowledged");

    let (s, n) = app.patch(
        &format!("/api/sync/nodes/{}", a.id),
        Some(ADMIN),
        &json!({"scopes": ["fam-1"]}),
    );
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["pending_changes"], 3, "{n}");
    // A write in the lost scope after the PATCH is not delivered (not even as a DELETE).
    let later = new_uuid();
    admin_put(&app, "Doc", &later, json!({"tenant_id": "fam-2"}));
    let got = a.drain(&app);
    got.iter().for_each(assert_gone);
    lost.sort();
    assert_eq!(ids(&got), lost);
    let live: Vec<&String> = a
        .entities
        .iter()
        .filter(|(_, (_, d))| !d.is_null())
        .map(|((_, u), _)| u)
        .collect();
    assert_eq!(live, vec![&kept]);
    assert!(a.sync(&app, vec![]).changes().is_empty(), "acknowledged");
    assert_eq!(app.node_status(&a)["pending_changes"], 0);
    admin_put(
        &app,
        "Doc",
        &lost[0],
        json!({"tenant_id": "fam-2", "again": true}),
    );
    assert!(a.drain(&app).is_empty());
}

#[test]
fn a_types_change_deletes_dropped_types_and_sends_added_ones() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], Some(&["Doc"]));
    let doc = new_uuid();
    let note = new_uuid();
    admin_put(&app, "Doc", &doc, json!({"tenant_id": "fam-1"}));
    admin_put(&app, "Note", &note, json!({"tenant_id": "fam-1"}));
    assert_eq!(ids(&a.drain(&app)), vec![doc.clone()]);
    let path = format!("/api/sync/nodes/{}", a.id);
    let (s, _) = app.patch(&path, Some(ADMIN), &json!({"types": ["Note"]}));
    assert_eq!(s, 200);
    let got = a.drain(&app);
    let by_id: std::collections::HashMap<String, String> = got
        .iter()
        .map(|c| {
            (
                c["entity_uuid"].as_str().unwrap().to_string(),
                c["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by_id[&doc], "DELETE", "{got:?}");
    assert_eq!(by_id[&note], "INSERT", "{got:?}");
    assert_eq!(by_id.len(), 2);
}

#[test]
fn a_conflict_answer_is_not_sent_once_the_entity_left_the_nodes_scopes() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let x = new_uuid();
    admin_put(&app, "Doc", &x, json!({"tenant_id": "fam-1", "v": 1}));
    a.drain(&app);
    admin_put(&app, "Doc", &x, json!({"tenant_id": "fam-1", "v": 2}));
    // A edits its stale copy: it loses (server_wins); its answer, carrying the server state,
    // is lost on the way.
    let p = a.packet(
        a.next_packet_no,
        a.acked,
        vec![upsert(
            "Doc",
            &x,
            1,
            json!({"tenant_id": "fam-1", "v": "A"}),
        )],
    );
    let ex = a.post_packet(&app, &p);
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    a.next_packet_no += 1;
    // Then A loses the scope (the entity does not change, so its queued answer stays): A must
    // get a DELETE, never the state.
    let (s, _) = app.patch(
        &format!("/api/sync/nodes/{}", a.id),
        Some(ADMIN),
        &json!({"scopes": ["fam-3"]}),
    );
    assert_eq!(s, 200);
    let got = a.drain(&app);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_gone(&got[0]);
}
