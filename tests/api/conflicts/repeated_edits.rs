//! Repeated edits, bad bases.

use super::*;

#[test]
fn a_node_that_keeps_editing_after_losing_conflicts_each_time() {
    let app = TestApp::spawn();
    let (mut a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    a_updates(&app, &mut a, upsert("Note", &u, 1, json!({"v": "a"})));
    let mut ids = Vec::new();
    for i in 0..3 {
        // Still based on version 1: the node has not taken the server state.
        let ex = b.sync(
            &app,
            vec![upsert("Note", &u, 1, json!({"v": format!("b{i}")}))],
        );
        ids.push(single_conflict(&ex, "Note", &u, "server_wins", 2));
        let back = changes_for(&ex, &u);
        assert_eq!(
            back.len(),
            1,
            "each loss resends the server state: {:?}",
            ex.changes()
        );
        assert_eq!(back[0]["data"], json!({"v": "a"}));
    }
    let rows = history(&app, &u);
    assert_eq!(rows.len(), 3);
    // Newest first.
    for (i, row) in rows.iter().rev().enumerate() {
        assert_auto_row(
            row,
            &ids[i],
            &b.id,
            &json!({"v": format!("b{i}")}),
            "server_wins:server",
            2,
        );
    }
    assert_eq!(entity_state(&app, "Note", &u)["version"], 2);

    // Once it takes the server state, its edit applies normally.
    let ex = b.sync(&app, vec![upsert("Note", &u, 2, json!({"v": "b-final"}))]);
    ok(&ex);
    assert_eq!(ex.body["conflict_count"], 0);
    assert_eq!(
        entity_state(&app, "Note", &u)["data"],
        json!({"v": "b-final"})
    );
    assert_eq!(history(&app, &u).len(), 3);
}

#[test]
fn a_base_version_ahead_of_the_server_is_rejected_per_change() {
    let app = TestApp::spawn();
    let (_a, mut b, u) = both_at_v1(&app, "Note", json!({"v": "base"}));
    let bad = upsert("Note", &u, 5, json!({"v": "future"}));
    let bad_id = bad["change_id"].clone();
    let bad_delete = delete("Note", &u, 2);
    let other = new_uuid();
    let ex = b.sync(
        &app,
        vec![bad, bad_delete, upsert("Note", &other, 0, json!({"v": 1}))],
    );
    ok(&ex);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 2, "{}", ex.body);
    let errors = ex.body["errors"].as_array().unwrap();
    assert_eq!(errors[0]["change_id"], bad_id);
    assert_eq!(errors[0]["error"], "invalid_change");
    assert_eq!(errors[0]["entity_uuid"], json!(u));
    assert_eq!(errors[1]["error"], "invalid_change");
    let e = entity_state(&app, "Note", &u);
    assert_eq!(e["version"], 1);
    assert_eq!(e["data"], json!({"v": "base"}));
    assert_eq!(e["deleted"], false);
    assert!(history(&app, &u).is_empty());
    assert_eq!(entity_state(&app, "Note", &other)["version"], 1);
}
