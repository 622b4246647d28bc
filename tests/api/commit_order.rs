//! Issue 4: "a transaction that took a lower sequence number but commits after a higher one
//! must still reach every node". This test makes that interleaving happen on purpose: a slow
//! writer takes the next sequence number and holds its transaction open while nodes exchange.
//! The design (docs/design.md) makes every writer take the hub's writer lock first, so the
//! exchanges wait for the slow writer instead of overtaking it; afterwards every node has both
//! changes. Without that lock a node could acknowledge past the slow writer's sequence number
//! and never receive its change. Runs on SQLite and (with STARSYNC_TEST_DATABASE_URL) PostgreSQL.
use crate::helpers::*;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use serde_json::json;

#[test]
fn a_late_commit_of_a_lower_sequence_number_still_reaches_every_node() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let url = app.cli_env()["DATABASE_URL"].clone();
    let pool = starsync::store::connect(&url, 1, 1000).expect("open the test database");
    let mut slow = pool.get().unwrap();

    // The slow writer: take the next sequence number and write an entity with it, but do not
    // commit yet.
    let slow_uuid = new_uuid();
    slow.batch_execute(&format!(
        "BEGIN;
         UPDATE server_state SET last_seq = last_seq + 1 WHERE id = 1;
         INSERT INTO entities (entity_type, entity_uuid, data, version, updated_at, is_deleted,
             author_node_id, holder_node_id, seq, created_seq, change_id, applied_at)
         SELECT 'Doc', '{slow_uuid}', '{{\"by\":\"slow\"}}', 1, '2026-01-01T00:00:00.000000Z',
             FALSE, NULL, NULL, last_seq, last_seq, NULL, '2026-01-01T00:00:00.000000Z'
         FROM server_state WHERE id = 1;"
    ))
    .unwrap();

    // Meanwhile A writes (a higher sequence number) and B exchanges: both must wait.
    let fast_uuid = new_uuid();
    let started = Instant::now();
    let (a_done, b_first) = std::thread::scope(|s| {
        let ta = s.spawn(|| {
            let ex = a.sync(&app, vec![upsert("Doc", &fast_uuid, 0, json!({"by": "A"}))]);
            (ex.status, Instant::now(), ex.changes())
        });
        let tb = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            let ex = b.sync(&app, vec![]);
            (ex.status, ex.changes())
        });
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            !ta.is_finished() && !tb.is_finished(),
            "exchanges must wait for the open writer instead of overtaking it"
        );
        slow.batch_execute("COMMIT").unwrap();
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(a_done.0, 200);
    assert!(a_done.1.duration_since(started) >= Duration::from_millis(700));
    assert_eq!(b_first.0, 200);

    // B drains: it must hold both the slow (lower seq) and the fast change.
    let mut seen: Vec<String> = b_first
        .1
        .iter()
        .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
        .collect();
    for c in b.drain(&app) {
        seen.push(c["entity_uuid"].as_str().unwrap().to_string());
    }
    assert!(
        seen.contains(&slow_uuid),
        "the late lower-seq change reached B: {seen:?}"
    );
    assert!(seen.contains(&fast_uuid), "{seen:?}");
    // A gets the slow writer's change too (already in the answer to its write, or later).
    let got: Vec<String> = a_done
        .2
        .iter()
        .chain(a.drain(&app).iter())
        .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
        .collect();
    assert!(got.contains(&slow_uuid), "{got:?}");
    assert_eq!(app.node_status(&a)["pending_changes"], 0);
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
}
