//! Group commit (issue 15, docs/design.md "Group commit"): concurrent exchanges share one write
//! transaction, each in its own savepoint, and are answered after the one commit.
//!
//! Each test makes a batch on purpose, without sleeps: a raw transaction holds the hub's
//! writer lock while a `starsync serve` process receives three exchanges; the test waits until
//! the process logs that the first waits for the writer lock and the other two queued behind
//! it (debug lines of `store::group`), then releases the lock. The three then run in one batch
//! (the log says so), and the test checks what a node relies on when one member fails:
//! - its own failure (a database error in its savepoint) rolls back only itself: its batch mates
//!   are answered 200 and their changes are stored; its change is not, and its packet number is
//!   not used up; the same when it is the batch's first member, which has no savepoint (the
//!   transaction is rolled back whole, and those queued behind it share a new one);
//! - a failure at commit (a deferred constraint) fails all three with a JSON error, and nothing
//!   of any of them is stored: the same packets, sent again, are applied as new.
//!
//! Runs on SQLite and (with STARSYNC_TEST_DATABASE_URL) PostgreSQL.
use crate::helpers::*;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use serde_json::{json, Value};
use starsync::store::WRITER_LOCK_LOG;

const WAIT: Duration = Duration::from_secs(30);

/// A raw transaction holding the hub's writer lock until dropped (rolled back) or released.
struct LockHolder {
    conn: Option<starsync::store::PooledConn>,
}

impl LockHolder {
    fn take(pool: &starsync::store::Pool) -> LockHolder {
        let mut conn = pool.get().unwrap();
        conn.batch_execute("BEGIN; UPDATE server_state SET last_seq = last_seq WHERE id = 1;")
            .unwrap();
        LockHolder { conn: Some(conn) }
    }

    fn release(mut self) {
        let mut conn = self.conn.take().unwrap();
        conn.batch_execute("COMMIT").unwrap();
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = conn.batch_execute("ROLLBACK");
        }
    }
}

/// Runs three exchanges (`first`, then `second` and `third` queued behind it) as one batch of
/// the server process `p`, and returns their outcomes in that order.
fn batch_of_three(
    p: &ServerProcess,
    pool: &starsync::store::Pool,
    nodes: [(&mut TestNode, Vec<Value>); 3],
) -> Vec<Exchange> {
    let [(first, c1), (second, c2), (third, c3)] = nodes;
    let holder = LockHolder::take(pool);
    let base = p.base.as_str();
    std::thread::scope(|s| {
        let holder = holder;
        let t1 = s.spawn(move || first.sync_at(base, c1));
        p.wait_for_log(&["waiting for the writer lock"], WAIT);
        let t2 = s.spawn(move || second.sync_at(base, c2));
        let t3 = s.spawn(move || third.sync_at(base, c3));
        // Both queued behind the first, which waits for the lock inside the process's writer.
        p.wait_for_log(&["queued for the writer"], WAIT);
        p.wait_for_log(&["queued for the writer"], WAIT);
        assert!(
            !t1.is_finished() && !t2.is_finished() && !t3.is_finished(),
            "no exchange may be answered while the writer lock is held elsewhere"
        );
        holder.release();
        vec![t1.join().unwrap(), t2.join().unwrap(), t3.join().unwrap()]
    })
}

/// The size of the next batch the process logs as settled (committed or failed).
fn batch_members(p: &ServerProcess, what: &str) -> u64 {
    let line = p.wait_for_log(&[what, "members="], WAIT);
    let rest = &line[line.find("members=").unwrap() + "members=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn setup() -> (TestApp, ServerProcess, starsync::store::Pool) {
    // Debug builds are slow: a batch must not reach its time bound before its third member.
    let app = TestApp::spawn_with("", &[("STARSYNC_GROUP_COMMIT_MAX_MS", "60000")]);
    let p = ServerProcess::spawn_logged(&app, &format!("{WRITER_LOCK_LOG}=debug"));
    let url = app.cli_env()["DATABASE_URL"].clone();
    let pool = starsync::store::connect(&url, 2, 1000).expect("open the test database");
    (app, p, pool)
}

fn is_postgres(app: &TestApp) -> bool {
    app.db.as_ref().unwrap().is_postgres()
}

/// From now on, saving node BAD's counters — after its packet's changes were written — fails
/// inside the database (a trigger), until [`stop_failing`].
fn fail_node_bad(app: &TestApp, pool: &starsync::store::Pool) {
    let sql = if is_postgres(app) {
        "CREATE FUNCTION fail_bad() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER fail_bad BEFORE UPDATE ON sync_nodes FOR EACH ROW \
             WHEN (NEW.code = 'BAD' AND NEW.received_packet_no > 0) EXECUTE FUNCTION fail_bad();"
    } else {
        "CREATE TRIGGER fail_bad BEFORE UPDATE ON sync_nodes \
             WHEN NEW.code = 'BAD' AND NEW.received_packet_no > 0 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
    };
    pool.get().unwrap().batch_execute(sql).unwrap();
}

fn stop_failing(app: &TestApp, pool: &starsync::store::Pool) {
    let drop = if is_postgres(app) {
        "DROP TRIGGER fail_bad ON sync_nodes"
    } else {
        "DROP TRIGGER fail_bad"
    };
    pool.get().unwrap().batch_execute(drop).unwrap();
}

#[test]
fn a_member_failing_mid_batch_rolls_back_only_itself() {
    let (app, p, pool) = setup();
    let mut a = app.register("A");
    let mut bad = app.register("BAD");
    let mut b = app.register("B");
    fail_node_bad(&app, &pool);

    let (ua, ubad, ub) = (new_uuid(), new_uuid(), new_uuid());
    let out = batch_of_three(
        &p,
        &pool,
        [
            (&mut a, vec![upsert("Doc", &ua, 0, json!({"by": "A"}))]),
            (
                &mut bad,
                vec![upsert("Doc", &ubad, 0, json!({"by": "BAD"}))],
            ),
            (&mut b, vec![upsert("Doc", &ub, 0, json!({"by": "B"}))]),
        ],
    );
    assert!(
        batch_members(&p, "write batch committed") >= 3,
        "the three exchanges shared one commit"
    );
    for ex in [&out[0], &out[2]] {
        assert_eq!(ex.status, 200, "{}", ex.body);
        assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    }
    assert_eq!(out[1].status, 500, "{}", out[1].body);
    assert_eq!(out[1].body["error"], "internal_error", "{}", out[1].body);
    assert!(out[1].body["message"].is_string(), "{}", out[1].body);

    // The batch mates' changes are stored; the failed member's is not.
    assert_eq!(app.entity("Doc", &ua).0, 200);
    assert_eq!(app.entity("Doc", &ub).0, 200);
    assert_eq!(
        app.entity("Doc", &ubad).0,
        404,
        "a failed exchange changes nothing"
    );

    // Its packet number was not used up: once the fault is gone, the same packet 1 applies.
    stop_failing(&app, &pool);
    let again = bad.sync_at(&p.base, vec![upsert("Doc", &ubad, 0, json!({"by": "BAD"}))]);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], false, "{}", again.body);
    assert_eq!(again.body["processed_count"], 1, "{}", again.body);
    assert_eq!(app.entity("Doc", &ubad).0, 200);
    // A and B end up holding all three changes (the batch mate's may already have come in
    // the batch's answers: a member sees the writes of those before it).
    for n in [&mut a, &mut b] {
        n.drain(&app);
        for u in [&ua, &ub, &ubad] {
            let key = ("Doc".to_string(), u.to_string());
            assert!(n.entities.contains_key(&key), "{} lacks {u}", n.code);
        }
    }
}

/// A batch's first member runs without a savepoint of its own (docs/design.md, "Group
/// commit"): when it fails after writing, the whole transaction is rolled back — its change with
/// it, nothing else was in it — and the writes queued behind it share a new batch, answered and
/// stored as if nothing had happened before them.
#[test]
fn a_failing_first_member_rolls_back_alone_and_the_queued_ones_go_on() {
    let (app, p, pool) = setup();
    let mut bad = app.register("BAD");
    let mut a = app.register("A");
    let mut b = app.register("B");
    fail_node_bad(&app, &pool);

    let (ubad, ua, ub) = (new_uuid(), new_uuid(), new_uuid());
    let out = batch_of_three(
        &p,
        &pool,
        [
            (
                &mut bad,
                vec![upsert("Doc", &ubad, 0, json!({"by": "BAD"}))],
            ),
            (&mut a, vec![upsert("Doc", &ua, 0, json!({"by": "A"}))]),
            (&mut b, vec![upsert("Doc", &ub, 0, json!({"by": "B"}))]),
        ],
    );
    assert_eq!(out[0].status, 500, "{}", out[0].body);
    assert_eq!(out[0].body["error"], "internal_error", "{}", out[0].body);
    for ex in [&out[1], &out[2]] {
        assert_eq!(ex.status, 200, "{}", ex.body);
        assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
    }
    // A and B share the next commit (with BAD's change-by-change retry, when the database's
    // refusal is one it retries, which fails in its own savepoint).
    assert!(
        batch_members(&p, "write batch committed") >= 2,
        "the two queued exchanges shared the next commit"
    );
    assert_eq!(app.entity("Doc", &ua).0, 200);
    assert_eq!(app.entity("Doc", &ub).0, 200);
    assert_eq!(
        app.entity("Doc", &ubad).0,
        404,
        "a failed exchange changes nothing"
    );

    // Its packet number was not used up, and the writer goes on working.
    stop_failing(&app, &pool);
    let again = bad.sync_at(&p.base, vec![upsert("Doc", &ubad, 0, json!({"by": "BAD"}))]);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], false, "{}", again.body);
    assert_eq!(again.body["processed_count"], 1, "{}", again.body);
    assert_eq!(app.entity("Doc", &ubad).0, 200);
}

#[test]
fn a_failed_commit_fails_every_member_and_changes_nothing() {
    let (app, p, pool) = setup();
    let mut a = app.register("A");
    let mut poison = app.register("POISON");
    let mut b = app.register("B");
    // A deferred constraint, checked only at COMMIT, broken by any `Poison` entity.
    let sql = if is_postgres(&app) {
        "CREATE TABLE poison_parent (id TEXT PRIMARY KEY);
         CREATE TABLE poison_ref (parent TEXT REFERENCES poison_parent(id) \
             DEFERRABLE INITIALLY DEFERRED);
         CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
             INSERT INTO poison_ref VALUES ('missing'); RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER poison AFTER INSERT ON entities FOR EACH ROW \
             WHEN (NEW.entity_type = 'Poison') EXECUTE FUNCTION poison();"
    } else {
        "CREATE TABLE poison_parent (id TEXT PRIMARY KEY);
         CREATE TABLE poison_ref (parent TEXT REFERENCES poison_parent(id) \
             DEFERRABLE INITIALLY DEFERRED);
         CREATE TRIGGER poison AFTER INSERT ON entities WHEN NEW.entity_type = 'Poison' \
             BEGIN INSERT INTO poison_ref VALUES ('missing'); END;"
    };
    pool.get().unwrap().batch_execute(sql).unwrap();

    let (ua, up, ub) = (new_uuid(), new_uuid(), new_uuid());
    let changes = |u: &str, t: &str| vec![upsert(t, u, 0, json!({"v": 1}))];
    let out = batch_of_three(
        &p,
        &pool,
        [
            (&mut a, changes(&ua, "Doc")),
            (&mut poison, changes(&up, "Poison")),
            (&mut b, changes(&ub, "Doc")),
        ],
    );
    assert_eq!(
        batch_members(&p, "failed to commit"),
        3,
        "the three exchanges were one batch"
    );
    for ex in &out {
        assert_eq!(ex.status, 500, "{}", ex.body);
        assert_eq!(ex.body["error"], "internal_error", "{}", ex.body);
        assert!(ex.body["message"].is_string(), "{}", ex.body);
    }
    for u in [&ua, &up, &ub] {
        assert_eq!(
            app.entity("Doc", u).0,
            404,
            "nothing of the batch is stored"
        );
    }
    assert_eq!(app.entity("Poison", &up).0, 404);

    // Nothing was numbered either: A and B send the same packet 1 again and it is applied
    // (not a duplicate), through the same process, whose writer recovered.
    for (n, u) in [(&mut a, &ua), (&mut b, &ub)] {
        let ex = n.sync_at(&p.base, changes(u, "Doc"));
        assert_eq!(ex.status, 200, "{}", ex.body);
        assert_eq!(ex.body["duplicate"], false, "{}", ex.body);
        assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
        assert_eq!(app.entity("Doc", u).0, 200);
    }
}
