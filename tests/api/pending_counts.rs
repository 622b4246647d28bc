//! `pending_changes` is the same whichever view computes it (one node's status, the node list,
//! the hub's statistics) and equals what the node then actually receives.
use crate::helpers::*;

use std::collections::HashSet;

use serde_json::{json, Value};

fn counts(app: &TestApp, node: &TestNode) -> (i64, i64, i64) {
    let own = app.node_status(node)["pending_changes"].as_i64().unwrap();
    let (_, list) = app.get("/api/sync/nodes", Some(ADMIN));
    let listed = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == json!(node.id))
        .unwrap()["pending_changes"]
        .as_i64()
        .unwrap();
    let (_, stats) = app.get("/api/sync/status", Some(ADMIN));
    let hub = stats["pending_counts"][&node.id]["pending_changes"]
        .as_i64()
        .unwrap();
    (own, listed, hub)
}

fn received(ex_changes: Vec<Value>) -> HashSet<String> {
    ex_changes
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["entity_type"].as_str().unwrap(),
                c["entity_uuid"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn every_view_of_pending_changes_agrees_with_what_is_delivered() {
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "7")]);
    let mut a = app.register("A");
    let mut b = app.register("B");

    // Entities in each node's latest answer: delivered, but pending until acknowledged.
    let mut last: std::collections::HashMap<String, HashSet<String>> = Default::default();
    let mut sync = |node: &mut TestNode, changes: Vec<Value>| {
        let ex = node.sync(&app, changes);
        assert_eq!(ex.status, 200, "{}", ex.body);
        last.insert(node.code.clone(), received(ex.changes()));
        ex
    };

    // Before C registers: entities, some deleted (old tombstones C must never count).
    let uuids: Vec<String> = (0..20).map(|_| new_uuid()).collect();
    sync(
        &mut a,
        uuids
            .iter()
            .map(|u| upsert("Doc", u, 0, json!({"v": 1})))
            .collect(),
    );
    sync(
        &mut a,
        uuids[..5].iter().map(|u| delete("Doc", u, 1)).collect(),
    );
    let mut c = app.register("C");
    let mut d = app.register("D");

    // After: more entities from B, a later delete of a live one, an admin write.
    while sync(&mut b, vec![]).more() {}
    let more: Vec<String> = (0..9).map(|_| new_uuid()).collect();
    sync(
        &mut b,
        more.iter()
            .map(|u| upsert("Task", u, 0, json!({"t": 1})))
            .collect(),
    );
    while sync(&mut a, vec![]).more() {}
    sync(&mut a, vec![delete("Doc", &uuids[10], 1)]);
    let (s, _) = app.put(
        &format!("/api/sync/entities/Doc/{}", uuids[11]),
        Some(ADMIN),
        &json!({"data": {"v": "admin"}}),
    );
    assert_eq!(s, 200);
    // A conflict answer queued for B (its stale edit of an entity A changed).
    sync(
        &mut a,
        vec![change("UPDATE", "Doc", &uuids[12], 1, json!({"v": "a2"}))],
    );
    let ex = sync(
        &mut b,
        vec![change("UPDATE", "Doc", &uuids[12], 1, json!({"v": "b2"}))],
    );
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    // D takes one packet and does not acknowledge it yet (its cursor stays behind).
    assert!(sync(&mut d, vec![]).more());

    for node in [&mut a, &mut b, &mut c, &mut d] {
        let unacked = last.get(&node.code).cloned().unwrap_or_default();
        let (own, listed, hub) = counts(&app, node);
        assert_eq!(
            (own, listed),
            (own, own),
            "{}: node status vs list",
            node.code
        );
        assert_eq!(hub, own, "{}: hub statistics vs node status", node.code);
        if node.code == "C" || node.code == "D" {
            // 15 live Docs + 9 Tasks, minus the later delete: real backlogs, not zeros.
            assert!(own >= 20, "{}: {own}", node.code);
        }
        // Ground truth: what the node receives until nothing is pending.
        let mut got = HashSet::new();
        loop {
            let ex = node.sync(&app, vec![]);
            assert_eq!(ex.status, 200);
            let more = ex.more();
            got.extend(received(ex.changes()));
            if !more {
                break;
            }
        }
        // One more empty exchange acknowledges the last answer.
        node.sync(&app, vec![]);
        let truth: HashSet<String> = got.union(&unacked).cloned().collect();
        assert_eq!(
            truth.len() as i64,
            own,
            "{}: counted {own}, delivered {:?}",
            node.code,
            truth
        );
        assert_eq!(
            counts(&app, node),
            (0, 0, 0),
            "{} after draining",
            node.code
        );
    }
}
