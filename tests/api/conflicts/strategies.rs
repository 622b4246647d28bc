//! Strategies.

use super::*;

#[test]
fn server_wins_is_the_default_and_the_loser_gets_the_server_state_again() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));

    let p = b.packet(
        b.next_packet_no,
        b.acked,
        vec![upsert("Note", &u, 1, json!({"v": "b"}))],
    );
    let ex = b.post_packet(&app, &p);
    let id = single_conflict(&ex, "Note", &u, "server_wins", 2);
    b.next_packet_no += 1;
    b.apply(ex.packet.as_ref().unwrap());
    // The loser receives the server state in the same answer.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["version"], 2);
    assert_eq!(back[0]["operation"], "UPDATE");
    assert_eq!(back[0]["data"], json!({"v": "a"}));

    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));

    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "server_wins:server",
        2,
    );
    assert_eq!(rows[0]["entity_type"], "Note");
    assert_eq!(rows[0]["entity_uuid"], json!(u));

    // Resending the same packet is a duplicate: no second history row.
    // The duplicate's answer repeats the original report (the node may have lost it) but
    // nothing is applied or recorded again.
    let dup = b.post_packet(&app, &p);
    assert_eq!(dup.status, 200, "{}", dup.body);
    assert_eq!(dup.body["duplicate"], true);
    assert_eq!(dup.body["conflict_count"], 1);
    assert_eq!(dup.body["conflicts"][0]["conflict_id"], json!(id));
    assert_eq!(history(&app, &u).len(), 1);

    // A (the winner) gets nothing back; B, having acknowledged, gets nothing again.
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    let again = b.sync(&app, vec![]);
    assert!(changes_for(&again, &u).is_empty(), "{:?}", again.changes());
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
    assert_eq!(
        b.entities[&("Note".to_string(), u.clone())],
        (2, json!({"v": "a"}))
    );
    // Automatic rows are never unresolved.
    assert_eq!(app.node_status(&b)["unresolved_conflicts"], 0);
    assert_eq!(server_status(&app)["unresolved_conflicts"], 0);
}

#[test]
fn a_lost_conflict_answer_is_repaired_by_the_retry() {
    let app = TestApp::spawn();
    let (mut a, b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let p = b.packet(
        b.next_packet_no,
        b.acked,
        vec![upsert("Note", &u, 1, json!({"v": "b"}))],
    );
    // The answer is lost on the way; the node resends the identical packet.
    let first = b.post_packet(&app, &p);
    single_conflict(&first, "Note", &u, "server_wins", 2);
    let retry = b.post_packet(&app, &p);
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["duplicate"], true);
    // The retry learns about the conflict it missed; nothing is applied again.
    assert_eq!(retry.body["conflict_count"], 1);
    assert_eq!(retry.body["conflicts"], first.body["conflicts"]);
    assert_eq!(retry.body["processed_count"], 0);
    let back = changes_for(&retry, &u);
    assert_eq!(
        back.len(),
        1,
        "the server state comes again: {:?}",
        retry.changes()
    );
    assert_eq!(back[0]["data"], json!({"v": "a"}));
    assert_eq!(
        history(&app, &u).len(),
        1,
        "one row per conflict, not per delivery"
    );
}

#[test]
fn default_strategy_comes_from_the_environment() {
    let app = TestApp::spawn_with("", &[("STARSYNC_CONFLICT_STRATEGY", "client_wins")]);
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Note", &u, 1, json!({"v": "b"}))]);
    single_conflict(&ex, "Note", &u, "client_wins", 2);
    assert_eq!(entity_state(&app, "Note", &u)["data"], json!({"v": "b"}));
}

#[test]
fn timestamp_wins_newer_client_change_wins() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Stamp", json!({"v": "base"}));
    a_updates(
        &app,
        &mut a,
        change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "a"}),
            "2020-01-01T10:00:00Z",
        ),
    );
    let ex = b.sync(
        &app,
        vec![change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "b"}),
            "2020-01-01T10:00:01Z",
        )],
    );
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    // B won: it holds the server state, no echo.
    assert!(changes_for(&ex, &u).is_empty(), "{:?}", ex.changes());

    let e = entity_state(&app, "Stamp", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"v": "b"}));

    // The overwritten server version (A's) is in history.
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &a.id,
        &json!({"v": "a"}),
        "timestamp_wins:client",
        2,
    );

    // A receives B's version.
    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["version"], 3);
    assert_eq!(got[0]["data"], json!({"v": "b"}));
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
}

#[test]
fn timestamp_wins_older_client_change_loses() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Stamp", json!({"v": "base"}));
    a_updates(
        &app,
        &mut a,
        change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "a"}),
            "2020-01-01T10:00:00Z",
        ),
    );
    // B's edit arrives later but was made earlier.
    let ex = b.sync(
        &app,
        vec![change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "b"}),
            "2020-01-01T09:59:59Z",
        )],
    );
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    let back = changes_for(&ex, &u);
    assert_eq!(
        back.len(),
        1,
        "the loser gets the server state: {:?}",
        ex.changes()
    );
    assert_eq!(back[0]["version"], 2);
    assert_eq!(back[0]["data"], json!({"v": "a"}));

    let e = entity_state(&app, "Stamp", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "timestamp_wins:server",
        2,
    );
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
}

#[test]
fn timestamp_wins_tie_goes_to_the_server() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Stamp", json!({"v": "base"}));
    a_updates(
        &app,
        &mut a,
        change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "a"}),
            "2020-01-01T10:00:00Z",
        ),
    );
    // The same instant, written with a fraction.
    let ex = b.sync(
        &app,
        vec![change_at(
            "UPDATE",
            "Stamp",
            &u,
            1,
            json!({"v": "b"}),
            "2020-01-01T10:00:00.000Z",
        )],
    );
    let id = single_conflict(&ex, "Stamp", &u, "timestamp_wins", 2);
    assert_eq!(changes_for(&ex, &u)[0]["data"], json!({"v": "a"}));
    assert_eq!(entity_state(&app, "Stamp", &u)["data"], json!({"v": "a"}));
    let rows = history(&app, &u);
    assert_auto_row(
        &rows[0],
        &id,
        &b.id,
        &json!({"v": "b"}),
        "timestamp_wins:server",
        2,
    );
}

#[test]
fn client_wins_applies_the_change_and_keeps_the_overwritten_version() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Doc", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Doc", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Doc", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Doc", &u, "client_wins", 2);
    assert!(
        changes_for(&ex, &u).is_empty(),
        "no echo to the winner: {:?}",
        ex.changes()
    );

    let e = entity_state(&app, "Doc", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"v": "b"}));
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    assert_auto_row(
        &rows[0],
        &id,
        &a.id,
        &json!({"v": "a"}),
        "client_wins:client",
        2,
    );

    let got = changes_for(&a.sync(&app, vec![]), &u);
    assert_eq!(got.len(), 1, "A receives B's version: {got:?}");
    assert_eq!(got[0]["version"], 3);
    assert_eq!(got[0]["operation"], "UPDATE");
    assert_eq!(got[0]["data"], json!({"v": "b"}));
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    let key = ("Doc".to_string(), u.clone());
    assert_eq!(a.entities[&key], (3, json!({"v": "b"})));
}

#[test]
fn manual_keeps_the_server_state_and_leaves_the_row_unresolved() {
    let app = rules_app();
    let (mut a, mut b, u) = both_at_v1(&app, "Ticket", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Ticket", &u, 1, json!({"v": "a"})));
    let ex = b.sync(&app, vec![upsert("Ticket", &u, 1, json!({"v": "b"}))]);
    let id = single_conflict(&ex, "Ticket", &u, "manual", 2);
    // As under server_wins, the loser is sent the server state at once.
    let back = changes_for(&ex, &u);
    assert_eq!(back.len(), 1, "{:?}", ex.changes());
    assert_eq!(back[0]["data"], json!({"v": "a"}));
    assert_eq!(back[0]["version"], 2);

    let e = entity_state(&app, "Ticket", &u);
    assert_eq!(e["version"], 2);
    assert_eq!(e["data"], json!({"v": "a"}));

    let rows = history(&app, &u);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["source_node_id"], b.id.as_str());
    assert_eq!(row["serialized_data"], json!({"v": "b"}));
    assert_eq!(row["conflict_resolution"], "manual:pending");
    assert_eq!(row["server_version"], 2);
    assert_eq!(row["resolved_at"], Value::Null);
    assert_eq!(row["resolved_by"], Value::Null);

    let unresolved = app.conflicts("?unresolved=true");
    assert_eq!(unresolved.len(), 1);
    assert_eq!(unresolved[0]["id"], id.as_str());
    assert_eq!(app.node_status(&b)["unresolved_conflicts"], 1);
    assert_eq!(app.node_status(&a)["unresolved_conflicts"], 0);
    assert_eq!(server_status(&app)["unresolved_conflicts"], 1);
    // The node may read its own status, with the count.
    let (s, mine) = app.get(&format!("/api/sync/status/{}", b.id), Some(&b.token));
    assert_eq!(s, 200, "{mine}");
    assert_eq!(mine["unresolved_conflicts"], 1);

    // A is not sent anything; B, after acknowledging, nothing more.
    assert!(changes_for(&a.sync(&app, vec![]), &u).is_empty());
    assert!(changes_for(&b.sync(&app, vec![]), &u).is_empty());
}
