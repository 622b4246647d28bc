//! Issue 4: "a transaction that took a lower sequence number but commits after a higher one
//! must still reach every node". This test makes that interleaving happen on purpose: a slow
//! writer takes the next sequence number and holds its transaction open while two nodes
//! exchange, each through its own `starsync serve` process. The design (docs/design.md) makes
//! every writer take the hub's writer lock first, so the exchanges wait for the slow writer
//! instead of overtaking it; afterwards every node has both changes. Without that lock a node
//! could acknowledge past the slow writer's sequence number and never receive its change.
//!
//! No sleeps: the test waits until both server processes say (debug log of `store::write_tx`)
//! that their exchange is waiting for the writer lock — and on PostgreSQL until the database
//! shows both backends waiting on a lock — before it checks that neither answered and commits.
//! The slow transaction is a drop guard: a failed assertion rolls it back, so the blocked
//! exchanges finish and the test fails instead of hanging.
//! Runs on SQLite and (with STARSYNC_TEST_DATABASE_URL) PostgreSQL.
use crate::helpers::*;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use serde_json::{json, Value};
use starsync::store::{DbConn, WRITER_LOCK_LOG};

/// A raw transaction on the test database, rolled back when dropped without [`OpenTx::commit`].
struct OpenTx {
    conn: Option<starsync::store::PooledConn>,
}

impl OpenTx {
    fn begin(mut conn: starsync::store::PooledConn, sql: &str) -> OpenTx {
        conn.batch_execute(&format!("BEGIN; {sql}")).unwrap();
        OpenTx { conn: Some(conn) }
    }

    fn conn(&mut self) -> &mut starsync::store::PooledConn {
        self.conn.as_mut().unwrap()
    }

    fn commit(mut self) {
        let mut conn = self.conn.take().unwrap();
        conn.batch_execute("COMMIT").unwrap();
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = conn.batch_execute("ROLLBACK");
        }
    }
}

/// PostgreSQL: how many other backends of this database wait for a lock right now.
fn pg_lock_waiters(tx: &mut OpenTx) -> Option<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    use diesel::RunQueryDsl;
    match &mut **tx.conn() {
        DbConn::Postgres(c) => Some(
            diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND wait_event_type = 'Lock'",
            )
            .get_result::<N>(c)
            .unwrap()
            .n,
        ),
        _ => None,
    }
}

#[test]
fn a_late_commit_of_a_lower_sequence_number_still_reaches_every_node() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    // One process per exchange: inside one process the second writer would queue on the
    // process's own mutex, out of sight; across processes both reach the database lock.
    let filter = format!("{WRITER_LOCK_LOG}=debug");
    let pa = ServerProcess::spawn_logged(&app, &filter);
    let pb = ServerProcess::spawn_logged(&app, &filter);
    let url = app.cli_env()["DATABASE_URL"].clone();
    let pool = starsync::store::connect(&url, 1, 1000).expect("open the test database");

    // The slow writer: take the next sequence number and write an entity with it, but do not
    // commit yet.
    let slow_uuid = new_uuid();
    let slow = OpenTx::begin(
        pool.get().unwrap(),
        &format!(
            "UPDATE server_state SET last_seq = last_seq + 1 WHERE id = 1;
             INSERT INTO entities (entity_type, entity_uuid, data, version, updated_at, is_deleted,
                 author_node_id, holder_node_id, seq, created_seq, change_id, applied_at)
             SELECT 'Doc', '{slow_uuid}', '{{\"by\":\"slow\"}}', 1, '2026-01-01T00:00:00.000000Z',
                 FALSE, NULL, NULL, last_seq, last_seq, NULL, '2026-01-01T00:00:00.000000Z'
             FROM server_state WHERE id = 1;"
        ),
    );

    // Meanwhile A writes (a higher sequence number) and B exchanges: both must wait.
    let fast_uuid = new_uuid();
    let (a_done, b_first) = std::thread::scope(|s| {
        // Owned by this closure: a failing assertion below drops it (rollback) before the
        // scope waits for the two exchanges.
        let mut slow = slow;
        let ta = s.spawn(|| {
            let ex = a.sync_at(
                &pa.base,
                vec![upsert("Doc", &fast_uuid, 0, json!({"by": "A"}))],
            );
            (ex.status, ex.body.clone(), ex.changes())
        });
        let tb = s.spawn(|| {
            let ex = b.sync_at(&pb.base, vec![]);
            (ex.status, ex.body.clone(), ex.changes())
        });
        for p in [&pa, &pb] {
            p.wait_for_log(&["waiting for the writer lock"], Duration::from_secs(30));
        }
        if pg_lock_waiters(&mut slow).is_some() {
            // PostgreSQL shows the waits themselves: both exchanges blocked on the row lock.
            let deadline = Instant::now() + Duration::from_secs(30);
            while pg_lock_waiters(&mut slow) != Some(2) {
                assert!(
                    Instant::now() < deadline,
                    "the two exchanges never both waited on the writer lock"
                );
                std::thread::yield_now();
            }
        }
        assert!(
            !ta.is_finished() && !tb.is_finished(),
            "exchanges must wait for the open writer instead of overtaking it"
        );
        slow.commit();
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(a_done.0, 200, "{}", a_done.1);
    assert_eq!(b_first.0, 200, "{}", b_first.1);
    for p in [&pa, &pb] {
        p.wait_for_log(&["writer lock taken"], Duration::from_secs(30));
    }
    let uuids = |changes: &[Value]| -> Vec<String> {
        changes
            .iter()
            .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
            .collect()
    };
    // A's transaction began after the slow commit: its answer already carries the slow change
    // (it could not see an uncommitted one).
    assert!(
        uuids(&a_done.2).contains(&slow_uuid),
        "A's answer lacks the slow change: {:?}",
        a_done.2
    );

    // B drains: it must hold both the slow (lower seq) and the fast change, each once.
    let mut seen = uuids(&b_first.2);
    seen.extend(uuids(&b.drain(&app)));
    seen.sort();
    let mut want = vec![slow_uuid.clone(), fast_uuid.clone()];
    want.sort();
    assert_eq!(seen, want, "B receives each change exactly once");
    assert!(a.drain(&app).is_empty(), "A has nothing more to receive");
    // Acknowledge the last packets received.
    for n in [&mut a, &mut b] {
        let ex = n.sync(&app, vec![]);
        assert_eq!((ex.status, ex.changes().len()), (200, 0), "{}", ex.body);
    }
    assert_eq!(app.node_status(&a)["pending_changes"], 0);
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
}
