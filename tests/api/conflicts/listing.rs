//! Listing.

use super::*;

/// (conflict id, node that met it, entity type, entity uuid, manual?)
type ListedRow = (String, String, String, String, bool);

struct Listed {
    app: TestApp,
    a: TestNode,
    b: TestNode,
    c: TestNode,
    u1: String,
    u2: String,
    /// Conflict ids in the order they happened.
    ids: Vec<String>,
    rows: Vec<ListedRow>,
}

/// Five conflicts: B and C on a Note, B twice and C once on a Ticket (manual).
fn listed() -> Listed {
    let app = rules_app();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let mut c = app.register("C");
    let u1 = new_uuid();
    let u2 = new_uuid();
    ok(&a.sync(
        &app,
        vec![
            upsert("Note", &u1, 0, json!({"v": 0})),
            upsert("Ticket", &u2, 0, json!({"v": 0})),
        ],
    ));
    b.drain(&app);
    c.drain(&app);
    a_updates(&app, &mut a, upsert("Note", &u1, 1, json!({"v": "a"})));
    let ex = a.sync(&app, vec![upsert("Ticket", &u2, 1, json!({"v": "a"}))]);
    ok(&ex);
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    let steps: [(&str, &str, bool); 5] = [
        ("B", "Note", false),
        ("C", "Ticket", true),
        ("B", "Ticket", true),
        ("C", "Note", false),
        ("B", "Ticket", true),
    ];
    for (i, (who, t, manual)) in steps.into_iter().enumerate() {
        let u = if t == "Note" { &u1 } else { &u2 };
        let node = if who == "B" { &mut b } else { &mut c };
        let ex = node.sync(&app, vec![upsert(t, u, 1, json!({"v": i}))]);
        let res = if manual { "manual" } else { "server_wins" };
        let id = single_conflict(&ex, t, u, res, 2);
        ids.push(id.clone());
        rows.push((id, node.id.clone(), t.to_string(), u.clone(), manual));
    }
    Listed {
        app,
        a,
        b,
        c,
        u1,
        u2,
        ids,
        rows,
    }
}

#[test]
fn listing_filters_and_orders_newest_first() {
    let l = listed();
    let app = &l.app;
    let all = app.conflicts("");
    let mut newest_first = l.ids.clone();
    newest_first.reverse();
    assert_eq!(ids_of(&all), newest_first);
    for r in &all {
        for f in [
            "id",
            "entity_type",
            "entity_uuid",
            "source_node_id",
            "arrival_time",
            "serialized_data",
            "conflict_resolution",
            "server_version",
            "resolved_at",
            "resolved_by",
        ] {
            assert!(r.get(f).is_some(), "row lacks {f}: {r}");
        }
    }

    let expect = |pred: &dyn Fn(&ListedRow) -> bool| -> Vec<String> {
        l.rows
            .iter()
            .rev()
            .filter(|r| pred(r))
            .map(|r| r.0.clone())
            .collect()
    };
    assert_eq!(
        ids_of(&app.conflicts("?entity_type=Ticket")),
        expect(&|r| r.2 == "Ticket")
    );
    assert_eq!(
        ids_of(&app.conflicts("?entity_type=Note")),
        expect(&|r| r.2 == "Note")
    );
    assert!(app.conflicts("?entity_type=Nothing").is_empty());
    assert_eq!(
        ids_of(&app.conflicts(&format!("?entity_uuid={}", l.u1))),
        expect(&|r| r.3 == l.u1)
    );
    assert_eq!(
        ids_of(&app.conflicts(&format!("?node_id={}", l.b.id))),
        expect(&|r| r.1 == l.b.id)
    );
    assert_eq!(
        ids_of(&app.conflicts(&format!("?node_id={}", l.c.id))),
        expect(&|r| r.1 == l.c.id)
    );
    assert!(app.conflicts(&format!("?node_id={}", l.a.id)).is_empty());
    assert_eq!(ids_of(&app.conflicts("?unresolved=true")), expect(&|r| r.4));
    assert_eq!(
        ids_of(&app.conflicts(&format!(
            "?unresolved=true&node_id={}&entity_uuid={}",
            l.b.id, l.u2
        ))),
        expect(&|r| r.4 && r.1 == l.b.id && r.3 == l.u2)
    );
    assert_eq!(
        ids_of(&app.conflicts("?limit=2")),
        newest_first[..2].to_vec()
    );

    // Unresolved counts per node and for the hub.
    assert_eq!(app.node_status(&l.b)["unresolved_conflicts"], 2);
    assert_eq!(app.node_status(&l.c)["unresolved_conflicts"], 1);
    assert_eq!(app.node_status(&l.a)["unresolved_conflicts"], 0);
    assert_eq!(server_status(app)["unresolved_conflicts"], 3);

    // Bad parameters are 422, not a silent default.
    for q in [
        "?limit=0",
        "?limit=abc",
        "?unresolved=maybe",
        "?before=not-an-id",
    ] {
        let (s, body) = app.get(&format!("/api/sync/conflicts{q}"), Some(ADMIN));
        assert_eq!(s, 422, "{q}: {body}");
    }
}

#[test]
fn listing_pages_with_before_without_overlap() {
    let l = listed();
    let app = &l.app;
    let all = ids_of(&app.conflicts(""));
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = ids_of(&app.conflicts(&query));
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        for id in &page {
            assert!(!paged.contains(id), "overlap at {id}");
        }
        paged.extend(page.clone());
        query = format!("?limit=2&before={}", page.last().unwrap());
    }
    assert_eq!(paged, all);
    // Paging combines with filters.
    let tickets = ids_of(&app.conflicts("?entity_type=Ticket"));
    let first = ids_of(&app.conflicts("?entity_type=Ticket&limit=1"));
    let rest = ids_of(&app.conflicts(&format!("?entity_type=Ticket&before={}", first[0])));
    assert_eq!([first, rest].concat(), tickets);
}

#[test]
fn a_node_lists_only_its_own_conflicts() {
    let l = listed();
    let app = &l.app;
    let (s, body) = app.get(
        &format!("/api/sync/conflicts?node_id={}", l.b.id),
        Some(&l.b.token),
    );
    assert_eq!(s, 200, "{body}");
    let mine = ids_of(body["conflicts"].as_array().unwrap());
    let expected: Vec<String> = l
        .rows
        .iter()
        .rev()
        .filter(|r| r.1 == l.b.id)
        .map(|r| r.0.clone())
        .collect();
    assert_eq!(mine, expected);
    assert_eq!(mine.len(), 3);

    let (s, body) = app.get(
        &format!("/api/sync/conflicts?node_id={}&unresolved=true", l.b.id),
        Some(&l.b.token),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["conflicts"].as_array().unwrap().len(), 2);

    let (s, body) = app.get("/api/sync/conflicts", Some(&l.b.token));
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (s, body) = app.get(
        &format!("/api/sync/conflicts?node_id={}", l.c.id),
        Some(&l.b.token),
    );
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (s, _) = app.get("/api/sync/conflicts", None);
    assert_eq!(s, 401);
    let (s, _) = app.get("/api/sync/conflicts", Some("not-a-token"));
    assert_eq!(s, 401);
    // Another node's status is not readable either.
    let (s, _) = app.get(&format!("/api/sync/status/{}", l.c.id), Some(&l.b.token));
    assert_eq!(s, 403);
}
