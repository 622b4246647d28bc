//! The basic path: register two nodes, a change on one reaches the other exactly once.
use crate::helpers::*;
use serde_json::json;

#[test]
fn change_on_one_node_reaches_the_other_once() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let ex = a.sync(
        &app,
        vec![upsert(
            "Estimate",
            &u,
            0,
            json!({"name": "Roof", "value": 150}),
        )],
    );
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1);
    assert_eq!(ex.body["duplicate"], false);
    // No echo to the author.
    assert!(ex.changes().is_empty());

    let got = b.sync(&app, vec![]);
    let changes = got.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["entity_uuid"], json!(u));
    assert_eq!(changes[0]["operation"], "INSERT");
    assert_eq!(changes[0]["version"], 1);
    assert_eq!(changes[0]["base_version"], json!(null));
    assert_eq!(changes[0]["data"], json!({"name": "Roof", "value": 150}));

    // Acknowledged by the next exchange: nothing comes again.
    let again = b.sync(&app, vec![]);
    assert!(again.changes().is_empty(), "{:?}", again.changes());
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
}
