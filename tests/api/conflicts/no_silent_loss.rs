//! No silent loss.

use super::*;

#[test]
fn no_version_any_node_sent_is_lost_silently() {
    let app = rules_app();
    let mut nodes = [app.register("A"), app.register("B"), app.register("C")];
    // Entities created by the admin (not node versions), two per strategy.
    let types = ["Note", "Doc", "Stamp", "Ticket", "Task"];
    let mut entities = Vec::new();
    for t in types {
        for _ in 0..2 {
            let u = new_uuid();
            let (s, body) = app.put(
                &format!("/api/sync/entities/{t}/{u}"),
                Some(ADMIN),
                &json!({"data": {"v": "admin", "status": "open"}}),
            );
            assert_eq!(s, 200, "{body}");
            entities.push((t.to_string(), u));
        }
    }
    for n in nodes.iter_mut() {
        n.drain(&app);
    }
    // Every node edits every entity based on version 1; one node deletes some.
    let mut sent: Vec<(String, String, Value)> = Vec::new();
    let mut conflict_ids = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        let mut changes = Vec::new();
        for (k, (t, u)) in entities.iter().enumerate() {
            if i == 2 && k % 3 == 0 {
                changes.push(delete(t, u, 1));
                continue;
            }
            let status = if (i + k) % 2 == 0 { "done" } else { "open" };
            let data = json!({"v": format!("{}-{k}", n.code), "status": status});
            let mut c = upsert(t, u, 1, data.clone());
            // Timestamps in arrival order for some, reversed for others.
            let minute = if k % 2 == 0 { i } else { 5 - i };
            c["updated_at"] = json!(format!("2020-01-01T10:0{minute}:00Z"));
            changes.push(c);
            sent.push((t.clone(), u.clone(), data));
        }
        let ex = n.sync(&app, changes);
        ok(&ex);
        assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
        for c in ex.body["conflicts"].as_array().unwrap() {
            conflict_ids.push(c["conflict_id"].as_str().unwrap().to_string());
        }
    }
    // The first node's edits were normal; every later one conflicted.
    assert_eq!(conflict_ids.len(), 2 * entities.len());
    let rows = app.conflicts("?limit=1000");
    assert_eq!(
        rows.len(),
        conflict_ids.len(),
        "exactly one history row per conflict"
    );
    let mut row_ids = ids_of(&rows);
    row_ids.sort();
    let mut sorted = conflict_ids.clone();
    sorted.sort();
    assert_eq!(row_ids, sorted);

    for (t, u, data) in &sent {
        let (s, e) = app.entity(t, u);
        assert_eq!(s, 200);
        // A "done wins" merge replaces the winner's version by a new one that keeps its other
        // fields: for Task, that merged version stands for it.
        let same = |v: &Value| v == data || (t == "Task" && v["v"] == data["v"]);
        let is_state = e["deleted"] == false && same(&e["data"]);
        let in_history = rows
            .iter()
            .any(|r| r["entity_uuid"] == json!(u) && same(&r["serialized_data"]));
        assert!(
            is_state || in_history,
            "{t}/{u}: {data} was lost (state {e})"
        );
    }
}
