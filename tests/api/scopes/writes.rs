//! The write rules of PROTOCOL §10: stamping, `scope_required`, `forbidden_scope` (the same
//! message whether the entity exists or not), `forbidden_type`, `invalid_scope`, global types.

use super::*;

#[test]
fn a_single_scope_nodes_write_without_the_field_is_stamped_and_echoed_back() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let mut b = node_with(&app, "B", &["fam-1"], None);
    let u = new_uuid();
    let ex = a.sync(
        &app,
        vec![upsert("Doc", &u, 0, json!({"title": "Roof", "n": 1.50}))],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    // The stored state differs from what A sent: A receives it back (the echo rule).
    let back = ex.changes();
    assert_eq!(ops(&back), vec![("Doc".into(), u.clone(), "INSERT".into())]);
    assert_eq!(back[0]["data"]["tenant_id"], "fam-1");
    let (_, stored) = app.entity("Doc", &u);
    assert_eq!(stored["data"]["tenant_id"], "fam-1");
    assert_eq!(stored["data"]["title"], "Roof");
    assert_eq!(b.drain(&app).len(), 1);
    assert_eq!(
        b.entities[&("Doc".to_string(), u.clone())].1["tenant_id"],
        "fam-1"
    );

    // A write that names its scope is stored as sent: no echo.
    let v = new_uuid();
    let ex = a.sync(
        &app,
        vec![upsert(
            "Doc",
            &v,
            0,
            json!({"tenant_id": "fam-1", "title": "x"}),
        )],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    assert!(ex.changes().is_empty(), "{:?}", ex.packet);

    // A per-type field: Badge keeps its scope in `owner`.
    let w = new_uuid();
    let ex = a.sync(
        &app,
        vec![upsert("Badge", &w, 0, json!({"tenant_id": "fam-2"}))],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    let (_, badge) = app.entity("Badge", &w);
    assert_eq!(badge["data"]["owner"], "fam-1");
}

#[test]
fn nodes_with_several_scopes_or_star_must_name_the_scope() {
    let app = scoped_app();
    let mut m = node_with(&app, "M", &["fam-1", "fam-2"], None);
    let mut s = node_with(&app, "S", &["*"], None);
    for n in [&mut m, &mut s] {
        let u = new_uuid();
        let ex = n.sync(&app, vec![upsert("Doc", &u, 0, json!({"title": "x"}))]);
        let (reason, message) = rejection(&ex);
        assert_eq!(reason, "scope_required", "{}", ex.body);
        assert!(message.contains("tenant_id"), "{message}");
        assert_eq!(app.entity("Doc", &u).0, 404, "nothing was stored");
    }
    let u = new_uuid();
    let ex = m.sync(
        &app,
        vec![upsert("Doc", &u, 0, json!({"tenant_id": "fam-2"}))],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    assert_eq!(app.entity("Doc", &u).0, 200);
}

#[test]
fn forbidden_scope_tells_nothing_whether_the_entity_exists() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let mut b = node_with(&app, "B", &["fam-2"], None);
    let x = new_uuid();
    let ex = b.sync(
        &app,
        vec![upsert(
            "Memo",
            &x,
            0,
            json!({"tenant_id": "fam-2", "t": "secret"}),
        )],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);

    // A writes B's existing entity (claiming its own scope), and a new id into B's scope, and
    // deletes B's entity: the same rejection and message each time.
    let attempts = vec![
        upsert("Memo", &x, 0, json!({"tenant_id": "fam-1", "t": "mine"})),
        upsert("Memo", &x, 1, json!({"tenant_id": "fam-2", "t": "mine"})),
        upsert("Memo", &new_uuid(), 0, json!({"tenant_id": "fam-2"})),
        delete("Memo", &x, 1),
    ];
    let mut messages = Vec::new();
    for c in attempts {
        let ex = a.sync(&app, vec![c]);
        let (reason, message) = rejection(&ex);
        assert_eq!(reason, "forbidden_scope", "{}", ex.body);
        let text = ex.body.to_string();
        assert!(
            !text.contains("secret") && !text.contains("server_version"),
            "{text}"
        );
        assert!(
            ex.changes().is_empty(),
            "nothing of B's travels: {:?}",
            ex.packet
        );
        messages.push(message);
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
    // Nothing changed, and no history row was written (Memo is manual: a conflict would be).
    let (_, stored) = app.entity("Memo", &x);
    assert_eq!(
        (stored["version"].as_i64(), &stored["data"]["t"]),
        (Some(1), &json!("secret"))
    );
    assert!(app.conflicts("").is_empty());

    // Moving one's own entity into another scope is refused too (the scope after the change).
    let y = new_uuid();
    a.sync(
        &app,
        vec![upsert("Doc", &y, 0, json!({"tenant_id": "fam-1"}))],
    );
    let ex = a.sync(
        &app,
        vec![upsert("Doc", &y, 1, json!({"tenant_id": "fam-2"}))],
    );
    assert_eq!(rejection(&ex).0, "forbidden_scope");
    assert_eq!(app.entity("Doc", &y).1["data"]["tenant_id"], "fam-1");
}

#[test]
fn forbidden_type_and_invalid_scope_values_are_rejected_per_change() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], Some(&["Doc"]));
    let ok = new_uuid();
    let ex = a.sync(
        &app,
        vec![
            upsert("Note", &new_uuid(), 0, json!({"tenant_id": "fam-1"})),
            upsert("Doc", &ok, 0, json!({"tenant_id": "fam-1"})),
        ],
    );
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    assert_eq!(
        ex.body["errors"][0]["reason"], "forbidden_type",
        "{}",
        ex.body
    );
    assert_eq!(
        app.entity("Doc", &ok).0,
        200,
        "the rest of the packet applies"
    );

    for bad in [
        json!(5),
        json!(null),
        json!("*"),
        json!(""),
        json!("z".repeat(129)),
    ] {
        let ex = a.sync(
            &app,
            vec![upsert("Doc", &new_uuid(), 0, json!({"tenant_id": bad}))],
        );
        assert_eq!(rejection(&ex).0, "invalid_scope", "{bad}: {}", ex.body);
    }
    // The admin cannot store a value that is not a scope either (422), but may write none.
    let (s, body) = app.put(
        &format!("/api/sync/entities/Doc/{}", new_uuid()),
        Some(ADMIN),
        &json!({"data": {"tenant_id": 7}}),
    );
    assert_eq!(
        (s, body["error"].as_str()),
        (422, Some("invalid_request")),
        "{body}"
    );
    admin_put(&app, "Doc", &new_uuid(), json!({"title": "no scope"}));
}

#[test]
fn global_types_are_written_by_the_admin_and_star_nodes_only() {
    let app = scoped_app();
    let mut a = node_with(&app, "A", &["fam-1"], None);
    let mut s = node_with(&app, "S", &["*"], None);
    let mut n = app.register("N");
    let c = new_uuid();
    let ex = a.sync(&app, vec![upsert("Country", &c, 0, json!({"name": "FR"}))]);
    let (reason, message) = rejection(&ex);
    assert_eq!(reason, "forbidden_scope");
    assert!(message.contains("global"), "{message}");
    let ex = s.sync(&app, vec![upsert("Country", &c, 0, json!({"name": "FR"}))]);
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    let d = new_uuid();
    admin_put(&app, "Country", &d, json!({"name": "DE"}));
    // Every node receives global types, a node without scopes included.
    assert_eq!(ids(&a.drain(&app)), sorted(vec![c.clone(), d.clone()]));
    assert_eq!(ids(&n.drain(&app)), sorted(vec![c, d]));
}
