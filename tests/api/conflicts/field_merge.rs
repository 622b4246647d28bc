//! Field-level merge (PROTOCOL §5.1): changes that name their `fields`, over HTTP with raw
//! packets, and the node client computing `fields` itself.

use super::*;

/// An UPDATE naming its fields.
fn fields_update(t: &str, u: &str, base: u64, data: Value, fields: &[&str]) -> Value {
    let mut c = change("UPDATE", t, u, base, data);
    c["fields"] = json!(fields);
    c
}

fn admin_put(app: &TestApp, t: &str, u: &str, data: Value) -> Value {
    let (s, body) = app.put(
        &format!("/api/sync/entities/{t}/{u}"),
        Some(ADMIN),
        &json!({ "data": data }),
    );
    assert_eq!(s, 200, "{body}");
    body
}

fn no_conflict(ex: &Exchange) {
    ok(ex);
    assert_eq!(ex.body["conflict_count"], 0, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
}

/// The one change of an answer for `u` (panics unless exactly one).
fn one_back(ex: &Exchange, u: &str) -> Value {
    let back = changes_for(ex, u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    back[0].clone()
}

#[test]
fn disjoint_edits_merge_into_a_new_version_without_history() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t", "status": "open"}));
    // The admin renames it (version 2, the hub's); B, still at version 1, marks it done.
    admin_put(
        &app,
        "Note",
        &u,
        json!({"title": "Renamed", "status": "open"}),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            1,
            json!({"title": "t", "status": "done"}),
            &["status"],
        )],
    );
    no_conflict(&ex);
    let both = json!({"title": "Renamed", "status": "done"});
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], both);
    assert!(history(&app, &u).is_empty(), "a merge is not a conflict");
    // The merged state differs from what B sent: B receives it (the echo rule).
    let back = one_back(&ex, &u);
    assert_eq!(back["version"], 3);
    assert_eq!(back["data"], both);
    // A receives the merged state too (after the admin's version 2, replaced by 3).
    let got: Vec<_> = a
        .drain(&app)
        .into_iter()
        .filter(|c| c["entity_uuid"] == json!(u))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["data"], both);
    assert_eq!(a.entities[&("Note".to_string(), u.clone())].1, both);
    assert_eq!(b.entities[&("Note".to_string(), u.clone())].1, both);

    // Two nodes editing different fields of the same version: both edits survive, A's second
    // change is based on version 3 like B's.
    b.drain(&app);
    let ex = a.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            3,
            json!({"title": "By A", "status": "done"}),
            &["title"],
        )],
    );
    no_conflict(&ex);
    assert!(
        changes_for(&ex, &u).is_empty(),
        "A holds exactly what it sent"
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            3,
            json!({"title": "Renamed", "status": "archived", "tag": 1}),
            &["status", "tag"],
        )],
    );
    no_conflict(&ex);
    let all = json!({"title": "By A", "status": "archived", "tag": 1});
    assert_eq!(entity_state(&app, "Note", &u)["data"], all);
    assert_eq!(one_back(&ex, &u)["data"], all);
    assert_eq!(changes_for(&a.sync(&app, vec![]), &u)[0]["data"], all);
    assert!(history(&app, &u).is_empty());
}

#[test]
fn a_whole_document_change_still_conflicts_with_any_newer_version() {
    // Without `fields` the whole-document rule is unchanged: B's stale state loses although it
    // changed only `status`.
    let app = rules_app();
    let (_a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t", "status": "open"}));
    admin_put(
        &app,
        "Note",
        &u,
        json!({"title": "Renamed", "status": "open"}),
    );
    let ex = b.sync(
        &app,
        vec![upsert(
            "Note",
            &u,
            1,
            json!({"title": "t", "status": "done"}),
        )],
    );
    single_conflict(&ex, "Note", &u, "server_wins", 2);
    assert_eq!(
        entity_state(&app, "Note", &u)["data"],
        json!({"title": "Renamed", "status": "open"})
    );
}

/// A renames it (version 2, fields "title" and "note"); returns the nodes and the id.
fn a_renamed(app: &TestApp, t: &str) -> (TestNode, TestNode, String) {
    let (mut a, b, u) = both_at_v1(app, t, json!({"title": "t", "status": "open", "note": ""}));
    a_updates(
        app,
        &mut a,
        fields_update(
            t,
            &u,
            1,
            json!({"title": "A", "status": "open", "note": "by A"}),
            &["title", "note"],
        ),
    );
    (a, b, u)
}

/// B, at version 1, changes title (overlapping A's) and status (not overlapping).
fn b_overlaps(app: &TestApp, b: &mut TestNode, t: &str, u: &str, updated_at: &str) -> Exchange {
    let mut c = fields_update(
        t,
        u,
        1,
        json!({"title": "B", "status": "done", "note": ""}),
        &["title", "status"],
    );
    c["updated_at"] = json!(updated_at);
    b.sync(app, vec![c])
}

#[test]
fn overlapping_fields_under_server_wins_keep_the_servers_values_and_apply_the_rest() {
    let app = rules_app();
    let (mut a, mut b, u) = a_renamed(&app, "Note");
    let ex = b_overlaps(&app, &mut b, "Note", &u, &now());
    let id = single_conflict(&ex, "Note", &u, "server_wins", 2);
    assert_eq!(
        ex.body["conflicts"][0]["conflict_resolution"],
        "server_wins:server"
    );
    let merged = json!({"title": "A", "status": "done", "note": "by A"});
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 3, "B's status applied anyway: {e}");
    assert_eq!(e["data"], merged);
    // The history row keeps B's version: the server state with every field B named.
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"title": "B", "status": "done", "note": "by A"}),
        "server_wins:server",
        2,
    );
    assert_eq!(one_back(&ex, &u)["data"], merged);
    assert_eq!(one_back(&a.sync(&app, vec![]), &u)["data"], merged);
}

#[test]
fn overlapping_fields_under_client_wins_take_the_nodes_values() {
    let app = rules_app();
    let (mut a, mut b, u) = a_renamed(&app, "Doc");
    let ex = b_overlaps(&app, &mut b, "Doc", &u, &now());
    let id = single_conflict(&ex, "Doc", &u, "client_wins", 2);
    assert_eq!(
        ex.body["conflicts"][0]["conflict_resolution"],
        "client_wins:client"
    );
    let merged = json!({"title": "B", "status": "done", "note": "by A"});
    let e = entity_state(&app, "Doc", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], merged, "A's note stays: B did not name it");
    // The overwritten server version goes to history, authored by A.
    assert_auto_row(
        &history(&app, &u)[0],
        &id,
        &a.id,
        &json!({"title": "A", "status": "open", "note": "by A"}),
        "client_wins:client",
        2,
    );
    // B sent note "" but the state keeps A's: B receives the result.
    assert_eq!(one_back(&ex, &u)["data"], merged);
    assert_eq!(one_back(&a.sync(&app, vec![]), &u)["data"], merged);
}

#[test]
fn overlapping_fields_under_timestamp_wins_go_to_the_later_edit() {
    let app = rules_app();
    // B's edit is later than A's: B wins the title.
    let (_a, mut b, u) = a_renamed(&app, "Stamp");
    let later = starsync_protocol::format_ts(chrono::Utc::now() + chrono::Duration::seconds(60));
    let ex = b_overlaps(&app, &mut b, "Stamp", &u, &later);
    single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    assert_eq!(
        ex.body["conflicts"][0]["conflict_resolution"],
        "timestamp_wins:client"
    );
    let e = entity_state(&app, "Stamp", &u);
    assert_eq!(
        e["data"],
        json!({"title": "B", "status": "done", "note": "by A"})
    );
    assert_eq!(e["updated_at"], json!(later));

    // B's edit is older than A's: the server keeps the title, B's status still applies.
    let app = rules_app();
    let (_a, mut b, u) = a_renamed(&app, "Stamp");
    let ex = b_overlaps(&app, &mut b, "Stamp", &u, "2020-01-01T00:00:00.000000Z");
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    assert_eq!(
        ex.body["conflicts"][0]["conflict_resolution"],
        "timestamp_wins:server"
    );
    let e = entity_state(&app, "Stamp", &u);
    assert_eq!(
        e["data"],
        json!({"title": "A", "status": "done", "note": "by A"})
    );
    assert_ne!(
        e["updated_at"], "2020-01-01T00:00:00.000000Z",
        "time never goes back"
    );
    assert_auto_row(
        &history(&app, &u)[0],
        &id,
        &b.id,
        &json!({"title": "B", "status": "done", "note": "by A"}),
        "timestamp_wins:server",
        2,
    );
}

#[test]
fn overlapping_fields_under_manual_stay_pending_until_an_admin_resolves() {
    let app = rules_app();
    let (mut a, mut b, u) = a_renamed(&app, "Ticket");
    let ex = b_overlaps(&app, &mut b, "Ticket", &u, &now());
    let id = single_conflict(&ex, "Ticket", &u, "manual", 2);
    assert_eq!(
        ex.body["conflicts"][0]["conflict_resolution"],
        "manual:pending"
    );
    let kept = json!({"title": "A", "status": "done", "note": "by A"});
    assert_eq!(entity_state(&app, "Ticket", &u)["data"], kept);
    assert_eq!(one_back(&ex, &u)["data"], kept);
    let rows = app.conflicts("?unresolved=true");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], json!(id));
    let wanted = json!({"title": "B", "status": "done", "note": "by A"});
    assert_eq!(rows[0]["serialized_data"], wanted);
    a.drain(&app);
    b.drain(&app);

    // The admin takes B's version: exactly what B asked for, a new version for everyone.
    let (s, body) = app.post(
        &format!("/api/sync/conflicts/{id}/resolve"),
        Some(ADMIN),
        &json!({"use": "history"}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 4);
    assert_eq!(body["data"], wanted);
    assert!(app.conflicts("?unresolved=true").is_empty());
    for n in [&mut a, &mut b] {
        let got: Vec<_> = n
            .drain(&app)
            .into_iter()
            .filter(|c| c["entity_uuid"] == json!(u))
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["data"], wanted);
    }
    // The resolution is recorded per field: A's stale edits based on version 3 merge when they
    // name another field, and conflict with the admin's when they name the title.
    let ex = a.sync(
        &app,
        vec![fields_update(
            "Ticket",
            &u,
            3,
            json!({"title": "A", "status": "done", "note": "again"}),
            &["note"],
        )],
    );
    no_conflict(&ex);
    let ex = a.sync(
        &app,
        vec![fields_update(
            "Ticket",
            &u,
            3,
            json!({"title": "A2", "status": "done", "note": "again"}),
            &["title"],
        )],
    );
    single_conflict(&ex, "Ticket", &u, "manual", 5);
}

#[test]
fn priority_values_act_on_overlapping_fields() {
    let app = rules_app();
    // server_wins + "done wins": B (the loser) has done in an overlapping field; it stays.
    let (mut a, mut b, u) = both_at_v1(&app, "Task", json!({"status": "open", "title": "t"}));
    a_updates(
        &app,
        &mut a,
        fields_update(
            "Task",
            &u,
            1,
            json!({"status": "blocked", "title": "t"}),
            &["status"],
        ),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Task",
            &u,
            1,
            json!({"status": "done", "title": "B"}),
            &["status", "title"],
        )],
    );
    single_conflict(&ex, "Task", &u, "server_wins", 2);
    let e = entity_state(&app, "Task", &u);
    let done = json!({"status": "done", "title": "B"});
    assert_eq!(e["data"], done);
    assert_eq!(e["version"], 3);
    // That is exactly what B sent: B holds it already, A receives it.
    assert!(changes_for(&ex, &u).is_empty(), "{:?}", ex.changes());
    assert_eq!(one_back(&a.sync(&app, vec![]), &u)["data"], done);

    // client_wins + "done wins": the server (the loser) has done; it stays, B's title applies.
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "DoneDoc", json!({"status": "open", "title": "t"}));
    a_updates(
        &app,
        &mut a,
        fields_update(
            "DoneDoc",
            &u,
            1,
            json!({"status": "done", "title": "t"}),
            &["status"],
        ),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "DoneDoc",
            &u,
            1,
            json!({"status": "open", "title": "B"}),
            &["status", "title"],
        )],
    );
    single_conflict(&ex, "DoneDoc", &u, "client_wins", 2);
    let done = json!({"status": "done", "title": "B"});
    assert_eq!(entity_state(&app, "DoneDoc", &u)["data"], done);
    assert_eq!(one_back(&ex, &u)["data"], done);
    assert_eq!(one_back(&a.sync(&app, vec![]), &u)["data"], done);

    // A priority field that does not overlap is no conflict: B may reopen the task while A
    // renamed it.
    b.drain(&app);
    a.drain(&app);
    let v = b.version_of("DoneDoc", &u);
    a_updates(
        &app,
        &mut a,
        fields_update(
            "DoneDoc",
            &u,
            v,
            json!({"status": "done", "title": "A"}),
            &["title"],
        ),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "DoneDoc",
            &u,
            v,
            json!({"status": "open", "title": "B"}),
            &["status"],
        )],
    );
    no_conflict(&ex);
    assert_eq!(
        entity_state(&app, "DoneDoc", &u)["data"],
        json!({"status": "open", "title": "A"})
    );
}

#[test]
fn an_update_naming_fields_loses_to_a_delete() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t", "status": "open"}));
    a_updates(&app, &mut a, delete("Note", &u, 1));
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            1,
            json!({"title": "t", "status": "done"}),
            &["status"],
        )],
    );
    let id = single_conflict(&ex, "Note", &u, "delete_wins", 2);
    assert_eq!(
        ex.body["conflicts"][0]["conflict_resolution"],
        "delete_wins:server"
    );
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["deleted"], true);
    assert_eq!(e["version"], 2);
    let back = one_back(&ex, &u);
    assert_eq!(back["operation"], "DELETE", "the tombstone goes back to B");
    assert_auto_row(
        &history(&app, &u)[0],
        &id,
        &b.id,
        &json!({"title": "t", "status": "done"}),
        "delete_wins:server",
        2,
    );

    // With `resurrect = true` the named fields revive the entity over its last state.
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Phoenix", json!({"title": "t", "status": "open"}));
    a_updates(&app, &mut a, delete("Phoenix", &u, 1));
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Phoenix",
            &u,
            1,
            json!({"status": "done"}),
            &["status"],
        )],
    );
    no_conflict(&ex);
    let e = entity_state(&app, "Phoenix", &u);
    assert_eq!(e["deleted"], false);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"title": "t", "status": "done"}));
}

#[test]
fn a_named_field_absent_from_data_is_removed() {
    let app = rules_app();
    let (_a, mut b, u) = both_at_v1(
        &app,
        "Note",
        json!({"title": "t", "obsolete": true, "status": "open"}),
    );
    admin_put(
        &app,
        "Note",
        &u,
        json!({"title": "Renamed", "obsolete": true, "status": "open"}),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            1,
            json!({"title": "t", "status": "open"}),
            &["obsolete"],
        )],
    );
    no_conflict(&ex);
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"title": "Renamed", "status": "open"}));
    assert!(history(&app, &u).is_empty());

    // Removing a field someone else changed meanwhile is a conflict on that field.
    admin_put(
        &app,
        "Note",
        &u,
        json!({"title": "Renamed", "status": "open", "x": 1}),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            3,
            json!({"title": "Renamed"}),
            &["x", "status"],
        )],
    );
    single_conflict(&ex, "Note", &u, "server_wins", 4);
    // status (not changed since 3) is removed; x (added by the admin at 4) stays.
    assert_eq!(
        entity_state(&app, "Note", &u)["data"],
        json!({"title": "Renamed", "x": 1})
    );
}

#[test]
fn fields_over_the_authors_own_unacknowledged_change_are_not_a_conflict() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t", "status": "open"}));
    // B's first change: version 2, exactly what B sent (no echo).
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            1,
            json!({"title": "t", "status": "doing"}),
            &["status"],
        )],
    );
    no_conflict(&ex);
    assert!(changes_for(&ex, &u).is_empty(), "{:?}", ex.changes());
    // Still based on version 1 (B does not know version 2): its own status, and a title nobody
    // else changed — no conflict.
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            1,
            json!({"title": "B", "status": "done"}),
            &["status", "title"],
        )],
    );
    no_conflict(&ex);
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"title": "B", "status": "done"}));
    // Another node's change of the title after that, then B again on version 1: the title
    // overlaps now, the status does not.
    a.drain(&app);
    a_updates(
        &app,
        &mut a,
        fields_update(
            "Note",
            &u,
            3,
            json!({"title": "A", "status": "done"}),
            &["title"],
        ),
    );
    let ex = b.sync(
        &app,
        vec![fields_update(
            "Note",
            &u,
            1,
            json!({"title": "B2", "status": "closed"}),
            &["status", "title"],
        )],
    );
    single_conflict(&ex, "Note", &u, "server_wins", 4);
    assert_eq!(
        entity_state(&app, "Note", &u)["data"],
        json!({"title": "A", "status": "closed"})
    );
    assert_eq!(history(&app, &u).len(), 1);
}

#[test]
fn a_resent_field_change_is_applied_once() {
    let app = rules_app();
    let (_a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t", "n": 0}));
    admin_put(&app, "Note", &u, json!({"title": "Renamed", "n": 0}));
    let c = fields_update("Note", &u, 1, json!({"title": "t", "n": 1}), &["n"]);
    no_conflict(&b.sync(&app, vec![c.clone()]));
    // The same change (same change_id) in a new packet: a no-op, no new version.
    no_conflict(&b.sync(&app, vec![c]));
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"title": "Renamed", "n": 1}));
}

#[test]
fn bad_fields_are_rejected_per_change() {
    let app = rules_app();
    let (_a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t"}));
    let fresh = new_uuid();
    let mut on_insert = upsert("Note", &fresh, 0, json!({"title": "x"}));
    on_insert["fields"] = json!(["title"]);
    let mut on_delete = delete("Note", &u, 1);
    on_delete["fields"] = json!([]);
    let twice = fields_update(
        "Note",
        &u,
        1,
        json!({"title": "y"}),
        &["title", "n", "title"],
    );
    let fine = fields_update("Note", &u, 1, json!({"title": "fine"}), &["title"]);
    let ex = b.sync(&app, vec![on_insert, on_delete, twice, fine]);
    ok(&ex);
    assert_eq!(ex.body["error_count"], 3, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    let errors = ex.body["errors"].as_array().unwrap();
    for (e, says) in errors
        .iter()
        .zip(["only for UPDATE", "only for UPDATE", "twice"])
    {
        assert_eq!(e["error"], "invalid_change", "{e}");
        assert_eq!(e["reason"], "invalid_fields", "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    }
    assert_eq!(app.entity("Note", &fresh).0, 404);
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"title": "fine"}));

    // `fields` of the wrong JSON type is a malformed change: the packet is refused whole.
    for bad in [json!("title"), json!([1]), json!({"title": true})] {
        let mut c = fields_update("Note", &u, 2, json!({"title": "no"}), &[]);
        c["fields"] = bad;
        let p = b.packet(b.next_packet_no, b.acked, vec![c]);
        let ex = b.post_packet(&app, &p);
        assert_eq!(ex.status, 400, "{}", ex.body);
        assert_eq!(ex.body["error"], "invalid_packet", "{}", ex.body);
    }
    assert_eq!(entity_state(&app, "Note", &u)["version"], 2);
    // The refused packets used up no number.
    ok(&b.sync(&app, vec![]));
}

#[test]
fn empty_fields_change_nothing_and_bring_the_node_up_to_date() {
    let app = rules_app();
    let (_a, mut b, u) = both_at_v1(&app, "Note", json!({"title": "t"}));
    admin_put(&app, "Note", &u, json!({"title": "Renamed"}));
    b.drain(&app);
    // B took version 2 before, acknowledged it, and then sent an edit that changed nothing
    // against its stale copy: no version, and B is sent the current state again.
    let ex = b.sync(
        &app,
        vec![fields_update("Note", &u, 1, json!({"title": "t"}), &[])],
    );
    no_conflict(&ex);
    assert_eq!(entity_state(&app, "Note", &u)["version"], 2);
    assert_eq!(one_back(&ex, &u)["data"], json!({"title": "Renamed"}));
}

// ---- The node client computes `fields` ----

use crate::node_e2e::{init, lib_node, ok as node_ok, sync as node_sync};

#[test]
fn two_node_processes_editing_different_fields_offline_both_keep_their_edits() {
    let app = rules_app();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (da.path(), db.path());
    init(a, &app.base, "A");
    init(b, &app.base, "B");
    let start = r#"{"title": "t", "status": "open", "n": 1}"#;
    node_ok(a, &["create", "Task", start, "--id", "task-1"]);
    node_sync(a);
    assert_eq!(node_sync(b)["received"], 1);

    // Offline: A renames; B marks it done, then edits again (one coalesced outbox entry).
    node_ok(
        a,
        &[
            "put",
            "Task",
            "task-1",
            r#"{"title": "A title", "status": "open", "n": 1}"#,
        ],
    );
    node_ok(
        b,
        &[
            "put",
            "Task",
            "task-1",
            r#"{"title": "t", "status": "done", "n": 1}"#,
        ],
    );
    node_ok(
        b,
        &[
            "put",
            "Task",
            "task-1",
            r#"{"title": "t", "status": "done", "n": 2}"#,
        ],
    );
    assert_eq!(node_ok(b, &["status"])["status"]["pending"], 1);
    let ra = node_sync(a);
    let rb = node_sync(b);
    assert!(ra["conflicts"].as_array().unwrap().is_empty(), "{ra}");
    assert!(rb["conflicts"].as_array().unwrap().is_empty(), "{rb}");
    node_sync(a);
    let both = json!({"title": "A title", "status": "done", "n": 2});
    assert_eq!(entity_state(&app, "Task", "task-1")["data"], both);
    for d in [a, b] {
        let e = node_ok(d, &["get", "Task", "task-1"]);
        assert_eq!(e["data"], both, "{}: {e}", d.display());
        assert_eq!(e["sync_state"], "synced", "{e}");
    }
    assert!(
        history(&app, "task-1").is_empty(),
        "no conflict, no history"
    );

    // Both edit the same field: that one conflicts (server_wins: B, later, loses the title)
    // while B's other field still applies.
    node_ok(
        a,
        &[
            "put",
            "Task",
            "task-1",
            r#"{"title": "A2", "status": "done", "n": 2}"#,
        ],
    );
    node_ok(
        b,
        &[
            "put",
            "Task",
            "task-1",
            r#"{"title": "B2", "status": "done", "n": 3}"#,
        ],
    );
    node_sync(a);
    let rb = node_sync(b);
    let conflicts = rb["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{rb}");
    assert_eq!(conflicts[0]["conflict_resolution"], "server_wins:server");
    node_sync(a);
    let merged = json!({"title": "A2", "status": "done", "n": 3});
    assert_eq!(entity_state(&app, "Task", "task-1")["data"], merged);
    for d in [a, b] {
        assert_eq!(node_ok(d, &["get", "Task", "task-1"])["data"], merged);
    }
}

#[test]
fn the_node_library_names_the_fields_it_changed() {
    let app = rules_app();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = lib_node(da.path(), &app.base, "A", 100);
    let b = lib_node(db.path(), &app.base, "B", 100);
    // A new entity travels whole: no `fields`.
    let (u, _) = a
        .create("Note", &json!({"title": "t", "gone": 1, "keep": [1, 2]}))
        .unwrap();
    let packet = |n: &starsync_node::Node| -> Value {
        let out = tempfile::tempdir().unwrap();
        let r = n.export(out.path()).unwrap();
        let last = r.files.last().expect("a packet");
        let bytes = std::fs::read(&last.file).unwrap();
        serde_json::to_value(starsync_protocol::decode_packet_bytes(&bytes, 1 << 30).unwrap())
            .unwrap()
    };
    let p = packet(&a);
    assert_eq!(p["changes"][0]["operation"], "INSERT");
    assert!(p["changes"][0].get("fields").is_none(), "{p}");
    a.sync().unwrap();
    b.sync().unwrap();

    // Two edits coalesced into one entry name every field either changed, a removal included.
    b.put(
        "Note",
        &u,
        &json!({"title": "t", "gone": 1, "keep": [1, 2], "added": true}),
    )
    .unwrap();
    b.put(
        "Note",
        &u,
        &json!({"title": "T", "keep": [1, 2], "added": true}),
    )
    .unwrap();
    let p = packet(&b);
    let c = &p["changes"][0];
    assert_eq!(c["operation"], "UPDATE");
    assert_eq!(c["base_version"], 1);
    let mut named: Vec<&str> = c["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(named, vec!["added", "gone", "title"], "{c}");
    // Meanwhile the admin changed a field B did not touch: both survive.
    let (s, body) = app.put(
        &format!("/api/sync/entities/Note/{u}"),
        Some(ADMIN),
        &json!({"data": {"title": "t", "gone": 1, "keep": [3]}}),
    );
    assert_eq!(s, 200, "{body}");
    let r = b.sync().unwrap();
    assert!(r.conflicts.is_empty(), "{r:?}");
    let both = json!({"title": "T", "keep": [3], "added": true});
    assert_eq!(entity_state(&app, "Note", &u)["data"], both);
    assert_eq!(b.get("Note", &u).unwrap().unwrap().data, both);
    a.sync().unwrap();
    assert_eq!(a.get("Note", &u).unwrap().unwrap().data, both);
}
