//! End to end: a real `starsync serve` process and three `starsync-node` CLI nodes (each its own
//! process and database), plus library-level checks of big syncs, the daemon and events.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use serde_json::{json, Value};
use starsync_node::{
    DaemonOptions, DaemonTick, InitOptions, LocalConflict, LocalDecision, Node, NodeEvent,
    NodeOptions,
};

/// Runs `starsync-node --data-dir DIR --json ARGS…`; returns (exit code, parsed stdout).
pub(crate) fn node(dir: &Path, args: &[&str]) -> (i32, Value) {
    let out = node_raw(dir, args, true);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    (out.status.code().unwrap_or(-1), v)
}

pub(crate) fn node_raw(dir: &Path, args: &[&str], json_out: bool) -> Output {
    let mut cmd = Command::new(node_bin());
    cmd.arg("--data-dir").arg(dir);
    if json_out {
        cmd.arg("--json");
    }
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    cmd.output().expect("run starsync-node")
}

/// `node` that must succeed.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> Value {
    let (code, v) = node(dir, args);
    assert_eq!(code, 0, "starsync-node {args:?} failed: {v}");
    v
}

pub(crate) fn init(dir: &Path, base: &str, code: &str) {
    ok(
        dir,
        &[
            "init",
            "--server",
            base,
            "--code",
            code,
            "--name",
            code,
            "--admin-token",
            ADMIN,
        ],
    );
}

pub(crate) fn sync(dir: &Path) -> Value {
    ok(dir, &["sync"])
}

#[test]
fn three_cli_nodes_share_writes_conflicts_and_deletes() {
    let app = TestApp::spawn();
    let server = ServerProcess::spawn(&app);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, c) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    for (d, code) in [(a, "A"), (b, "B"), (c, "C")] {
        init(d, &server.base, code);
    }

    // A write on A appears on B and C.
    let created = ok(
        a,
        &["create", "Estimate", r#"{"name": "Roof", "value": 150}"#],
    );
    let u = created["uuid"].as_str().unwrap().to_string();
    let st = ok(a, &["status"]);
    assert_eq!(st["status"]["pending"], 1);
    let r = sync(a);
    assert_eq!(r["sent"], 1);
    assert_eq!(ok(a, &["status"])["status"]["pending"], 0);
    for d in [b, c] {
        let r = sync(d);
        assert_eq!(r["received"], 1, "{r}");
        let e = ok(d, &["get", "Estimate", &u]);
        assert_eq!(e["data"], json!({"name": "Roof", "value": 150}));
        assert_eq!(e["server_version"], 1);
        assert_eq!(e["sync_state"], "synced");
    }

    // Concurrent edit on A and B: B syncs first and wins (server_wins); A loses, is told so,
    // and both end equal to the server; A's version is in the history.
    ok(
        b,
        &["put", "Estimate", &u, r#"{"name": "Roof", "value": 200}"#],
    );
    ok(
        a,
        &["put", "Estimate", &u, r#"{"name": "Roof", "value": 300}"#],
    );
    assert_eq!(ok(a, &["get", "Estimate", &u])["sync_state"], "pending");
    sync(b);
    let r = sync(a);
    assert_eq!(r["conflicts"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        r["conflicts"][0]["conflict_resolution"],
        "server_wins:server"
    );
    sync(b);
    sync(c);
    let (_, server_state) = app.entity("Estimate", &u);
    for d in [a, b, c] {
        assert_eq!(
            ok(d, &["get", "Estimate", &u])["data"],
            server_state["data"],
            "node {} differs",
            d.display()
        );
    }
    assert_eq!(server_state["data"]["value"], 200);
    let local_conflicts = ok(a, &["conflicts"]);
    assert_eq!(local_conflicts.as_array().unwrap().len(), 1);
    assert_eq!(local_conflicts[0]["local_data"]["value"], 300);
    let history = app.conflicts(&format!("?entity_uuid={u}"));
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["serialized_data"]["value"], 300);
    assert_eq!(history[0]["conflict_resolution"], "server_wins:server");
    // The node can read its history rows from the server with its own token.
    let remote = ok(a, &["conflicts", "--server"]);
    assert_eq!(remote.as_array().unwrap().len(), 1);
    assert_eq!(remote[0]["id"], history[0]["id"]);
    assert!(ok(b, &["conflicts"]).as_array().unwrap().is_empty());

    // Deletes propagate and do not resurrect: C deletes while B edits its older copy.
    ok(c, &["delete", "Estimate", &u]);
    ok(
        b,
        &["put", "Estimate", &u, r#"{"name": "Roof", "value": 999}"#],
    );
    sync(c);
    let r = sync(b);
    assert_eq!(
        r["conflicts"][0]["conflict_resolution"],
        "delete_wins:server"
    );
    sync(a);
    sync(b);
    for d in [a, b, c] {
        let e = ok(d, &["get", "Estimate", &u]);
        assert_eq!(e["deleted"], true, "{} still has {u}: {e}", d.display());
        assert!(ok(d, &["list", "Estimate"]).as_array().unwrap().is_empty());
    }
    let (_, gone) = app.entity("Estimate", &u);
    assert_eq!(gone["deleted"], true);
    // Deleting again is a no-op that queues nothing.
    ok(a, &["delete", "Estimate", &u]);
    assert_eq!(ok(a, &["status"])["status"]["pending"], 0);
    assert_eq!(
        node_status_by_id(&app, &ok(a, &["status"])["node"]["node_id"])["pending_changes"],
        0
    );
}

fn node_status_by_id(app: &TestApp, id: &Value) -> Value {
    let (s, body) = app.get(
        &format!("/api/sync/status/{}", id.as_str().unwrap()),
        Some(ADMIN),
    );
    assert_eq!(s, 200, "{body}");
    body
}

#[test]
fn rejected_changes_are_failed_and_can_be_retried_or_dropped() {
    let app = TestApp::spawn_with("[conflicts.types.Rate]\nimmutable = true\n", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d, &app.base, "A");
    let u = new_uuid();
    ok(d, &["put", "Rate", &u, r#"{"pct": 5}"#]);
    ok(
        d,
        &["queue", &new_uuid(), "bad-type", "INSERT", r#"{"x": 1}"#],
    );
    let good = ok(d, &["create", "Note", r#"{"text": "fine"}"#]);
    // Rejected changes: the sync completes, and its exit code tells a script (4).
    let (code, r) = node(d, &["sync"]);
    assert_eq!(code, 4, "{r}");
    assert_eq!(r["errors"].as_array().unwrap().len(), 2, "{r}");
    let failed = ok(d, &["failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 2);
    let reasons: Vec<&str> = failed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"immutable_type"), "{reasons:?}");
    assert!(reasons.contains(&"invalid_entity_type"), "{reasons:?}");
    assert_eq!(ok(d, &["status"])["status"]["failed"], 2);
    assert_eq!(ok(d, &["get", "Rate", &u])["sync_state"], "failed");
    // The good change went through, with its data.
    let (s, note) = app.entity("Note", good["uuid"].as_str().unwrap());
    assert_eq!(s, 200, "{note}");
    assert_eq!(
        (note["data"].clone(), note["version"].clone()),
        (json!({"text": "fine"}), json!(1))
    );
    // The rejected ones never reached the server's store.
    assert_eq!(app.entity("Rate", &u).0, 404);

    // Retry: rejected again (still immutable), still failed.
    let rate_id = failed
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["entity_type"] == "Rate")
        .unwrap()["id"]
        .to_string();
    ok(d, &["failed", "retry", &rate_id]);
    assert_eq!(ok(d, &["status"])["status"]["pending"], 1);
    let (code, r) = node(d, &["sync"]);
    assert_eq!(code, 4, "{r}");
    assert_eq!(r["errors"].as_array().unwrap().len(), 1);
    // Nothing new rejected: a clean sync exits 0.
    sync(d);
    // Drop all: the outbox is clean and the never-accepted entity is gone locally.
    let dropped = ok(d, &["failed", "drop", "all"]);
    assert_eq!(dropped.as_array().unwrap().len(), 2);
    let st = ok(d, &["status"])["status"].clone();
    assert_eq!(
        (st["pending"].clone(), st["failed"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(ok(d, &["get", "Rate", &u])["deleted"], true);
    // Human output names the way out.
    let out = node_raw(d, &["failed"], false);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no failed changes"));
}

#[test]
fn unreachable_server_fails_the_sync_and_loses_nothing() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d, &app.base, "A");
    let u = ok(d, &["create", "Task", r#"{"title": "offline"}"#])["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    // Point the node at a port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    ok(d, &["config", "server_url", &dead]);
    ok(d, &["config", "max_retries", "1"]);
    let (code, v) = node(d, &["sync"]);
    assert_eq!(code, 2, "unreachable exits 2: {v}");
    assert_eq!(v["kind"], "unreachable");
    let st = ok(d, &["status"])["status"].clone();
    assert!(
        st["last_error"].as_str().unwrap().contains("unreachable"),
        "{st}"
    );
    // The change is numbered and stored, waiting to be resent byte for byte.
    assert_eq!(st["in_flight"], 1);
    assert_eq!(st["stored_packets"], 1);
    let human = node_raw(d, &["sync"], false);
    assert!(String::from_utf8_lossy(&human.stderr).contains("nothing is lost"));

    ok(d, &["config", "server_url", &app.base]);
    let r = sync(d);
    assert_eq!(r["sent"], 1);
    let (s, e) = app.entity("Task", &u);
    assert_eq!(s, 200);
    assert_eq!(e["data"]["title"], "offline");
    let st = ok(d, &["status"])["status"].clone();
    assert_eq!(st["last_error"], Value::Null);
    assert_eq!(
        (st["in_flight"].clone(), st["stored_packets"].clone()),
        (json!(0), json!(0))
    );

    // A refused token is a different failure (exit 3) with the fix in the message.
    let id = ok(d, &["status"])["node"]["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = app.post(
        &format!("/api/sync/nodes/{id}/disable"),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200);
    let out = node_raw(d, &["sync"], false);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("enable the node"));
}

#[test]
fn init_errors_name_the_fix() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Not initialized yet.
    let out = node_raw(d, &["status"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("starsync-node init"));
    // No admin token.
    let (code, v) = node(d, &["init", "--server", &app.base, "--code", "X"]);
    assert_eq!(code, 3, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--admin-token"),
        "{v}"
    );
    init(d, &app.base, "X");
    // Twice in the same directory.
    let (code, v) = node(
        d,
        &[
            "init",
            "--server",
            &app.base,
            "--code",
            "Y",
            "--admin-token",
            ADMIN,
        ],
    );
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("--force"), "{v}");
    // Code taken.
    let other = tempfile::tempdir().unwrap();
    let (code, v) = node(
        other.path(),
        &[
            "init",
            "--server",
            &app.base,
            "--code",
            "X",
            "--admin-token",
            ADMIN,
        ],
    );
    assert_eq!(code, 3);
    assert!(
        v["error"].as_str().unwrap().contains("another --code"),
        "{v}"
    );

    // Attach to an existing registration (token + node id) instead of registering.
    let reg = app.register("ATTACHED");
    let (code, v) = node(
        other.path(),
        &[
            "init",
            "--server",
            &app.base,
            "--node-id",
            &reg.id,
            "--token",
            &reg.token,
        ],
    );
    assert_eq!(code, 1, "attaching needs the server node id: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("--server-node-id"),
        "{v}"
    );
    let info = ok(
        other.path(),
        &[
            "init",
            "--server",
            &app.base,
            "--node-id",
            &reg.id,
            "--token",
            &reg.token,
            "--server-node-id",
            &app.server_id,
        ],
    );
    assert_eq!(info["code"], "ATTACHED");
    ok(other.path(), &["create", "Note", r#"{"n": 1}"#]);
    assert_eq!(sync(other.path())["sent"], 1);
}

/// A library node: fast retries, HTTP to the app.
pub(crate) fn lib_node(dir: &Path, base: &str, code: &str, batch: i64) -> Node {
    let mut opts = InitOptions::register(base, code).admin_token(ADMIN);
    opts.batch_size = batch;
    Node::init_with(
        dir,
        opts,
        None,
        NodeOptions {
            retry_base_delay: Duration::from_millis(5),
            retry_max_delay: Duration::from_millis(20),
        },
    )
    .unwrap()
}

#[test]
fn big_initial_sync_arrives_in_batches_with_more() {
    let app = TestApp::spawn_with("", &[("STARSYNC_BATCH_SIZE", "50")]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = lib_node(da.path(), &app.base, "A", 40);
    let n = 1000;
    for i in 0..n {
        a.create("Part", &json!({"i": i, "pad": "x".repeat(50)}))
            .unwrap();
    }
    assert_eq!(a.status().unwrap().pending, n);
    let r = a.sync().unwrap();
    assert_eq!(r.sent, n as u64);
    assert!(r.packets_sent >= 25, "{r:?}");
    assert_eq!(a.status().unwrap().pending, 0);

    // A node registered afterwards gets everything through the same packets.
    let b = lib_node(db.path(), &app.base, "B", 40);
    let events = b.subscribe();
    let r = b.sync().unwrap();
    assert_eq!(r.received, n as u64, "{r:?}");
    assert!(r.exchanges >= 20, "server batches of 50: {r:?}");
    assert_eq!(b.list("Part").unwrap().len(), n as usize);
    // Paging through the big list.
    let page = b.list_page("Part", None, 100, false).unwrap();
    assert_eq!(page.len(), 100);
    let next = b
        .list_page("Part", Some(&page[99].entity_uuid), 100, false)
        .unwrap();
    assert!(next[0].entity_uuid > page[99].entity_uuid);
    // Acknowledged: the server has nothing left for B.
    let (_, st) = app.get(
        &format!("/api/sync/status/{}", b.info().unwrap().node_id),
        Some(ADMIN),
    );
    assert_eq!(st["pending_changes"], 0, "{st}");
    let got: Vec<NodeEvent> = events.try_iter().collect();
    assert!(matches!(got.first(), Some(NodeEvent::SyncStarted)));
    assert!(got
        .iter()
        .any(|e| matches!(e, NodeEvent::DataChanged { .. })));
    assert!(got
        .iter()
        .any(|e| matches!(e, NodeEvent::SyncCompleted(r) if r.received == n as u64)));
    assert!(got.iter().any(|e| matches!(e, NodeEvent::StatusChanged(_))));
}

/// A hook that merges: the server's fields, plus local fields the server does not have.
struct MergeHook;
impl starsync_node::ConflictHook for MergeHook {
    fn local_conflict(&self, c: &LocalConflict) -> LocalDecision {
        match (&c.local_data, &c.server_data) {
            (Some(Value::Object(l)), Some(Value::Object(s))) => {
                let mut m = s.clone();
                for (k, v) in l {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
                LocalDecision::Merge(Value::Object(m))
            }
            _ => LocalDecision::KeepLocal,
        }
    }
}

/// The server's next packet for `code`, written by `starsync export` into a fresh directory.
fn server_export(app: &TestApp, code: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let o = app.cli(&[
        "export",
        "--node",
        code,
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn pending_local_change_is_never_overwritten_and_hooks_decide() {
    let app = TestApp::spawn();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = lib_node(dirs[0].path(), &app.base, "A", 100);
    let b = lib_node(dirs[1].path(), &app.base, "B", 100);
    let c = lib_node(dirs[2].path(), &app.base, "C", 100);
    let (u, _) = a.create("Doc", &json!({"title": "v1"})).unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    c.sync().unwrap();
    a.put("Doc", &u, &json!({"title": "from A"})).unwrap();
    a.sync().unwrap();

    // Default hook: B's pending edit is not overwritten by A's incoming change (arriving here
    // as a server packet file while the edit waits); the server decides when it gets the edit
    // (server_wins: A's version stays, B's lands in history) and B then shows the server state.
    b.put("Doc", &u, &json!({"title": "from B"})).unwrap();
    let events = b.subscribe();
    let files = server_export(&app, "B");
    let r = b
        .import(&[files.path().to_path_buf()], &mut |_| {})
        .unwrap();
    assert_eq!((r.received, r.kept_local), (0, 1), "{r:?}");
    assert_eq!(
        b.get("Doc", &u).unwrap().unwrap().data.to_value()["title"],
        "from B"
    );
    let got: Vec<NodeEvent> = events.try_iter().collect();
    assert!(got.iter().any(|e| matches!(
        e,
        NodeEvent::LocalConflict {
            decision: LocalDecision::KeepLocal,
            ..
        }
    )));
    let r = b.sync().unwrap();
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    assert!(r.conflicts[0].node_lost());
    assert_eq!(
        b.get("Doc", &u).unwrap().unwrap().data.to_value()["title"],
        "from A"
    );
    let got: Vec<NodeEvent> = events.try_iter().collect();
    assert!(got
        .iter()
        .any(|e| matches!(e, NodeEvent::ConflictDetected(c) if c.node_lost())));

    // Merge hook: C's pending edit of another field meets A's change; C shows the merge and
    // sends it as an update based on A's version, so the server applies it without conflict.
    c.set_conflict_hook(std::sync::Arc::new(MergeHook));
    c.put("Doc", &u, &json!({"title": "v1", "note": "from C"}))
        .unwrap();
    let files = server_export(&app, "C");
    c.import(&[files.path().to_path_buf()], &mut |_| {})
        .unwrap();
    let merged = c.get("Doc", &u).unwrap().unwrap().data;
    assert_eq!(merged, json!({"title": "from A", "note": "from C"}));
    let r = c.sync().unwrap();
    assert!(
        r.conflicts.is_empty(),
        "the merge is based on the server version: {r:?}"
    );
    let (_, server) = app.entity("Doc", &u);
    assert_eq!(server["data"], merged);
    a.sync().unwrap();
    assert_eq!(a.get("Doc", &u).unwrap().unwrap().data, merged);
}

#[test]
fn daemon_syncs_after_local_writes_and_stops_cleanly() {
    let app = TestApp::spawn();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = lib_node(da.path(), &app.base, "A", 100);
    init(db.path(), &app.base, "B");

    // Library daemon: a write through the handle is synced at once (long interval).
    let handle = a.spawn_daemon(DaemonOptions {
        interval: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(100),
        ..DaemonOptions::default()
    });
    let (u, _) = a.create("Memo", &json!({"text": "hello"})).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.entity("Memo", &u).0 != 200 {
        assert!(Instant::now() < deadline, "daemon did not sync the write");
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.stop().unwrap();
    assert_memo(&app, &u, "hello");

    // CLI daemon in its own process: picks up a write made by another process, and stops
    // cleanly on SIGTERM.
    let mut child = Command::new(node_bin())
        .arg("--data-dir")
        .arg(db.path())
        .args(["daemon", "--interval", "3600"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = node(db.path(), &["get", "Memo", &u]);
        if e.0 == 0 {
            assert_eq!(e.1["data"], json!({"text": "hello"}), "{}", e.1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CLI daemon did not receive A's memo"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let u2 = ok(db.path(), &["create", "Memo", r#"{"text": "from B"}"#])["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.entity("Memo", &u2).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "CLI daemon did not send B's memo"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_memo(&app, &u2, "from B");
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let out = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(out.0, Some(0), "daemon exit: {}", out.1);
    assert!(out.1.contains("stopped cleanly"), "{}", out.1);
}

fn wait_with_timeout(child: &mut std::process::Child, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not stop in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn daemon_backs_off_while_unreachable_and_syncs_when_the_server_returns() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let a = lib_node(dir.path(), &app.base, "A", 100);
    let (u, _) = a.create("Memo", &json!({"text": "while down"})).unwrap();
    // The server "moves" away: a port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    a.set_setting("server_url", &dead).unwrap();
    a.set_setting("max_retries", "0").unwrap();
    // The daemon runs on its own thread and reports every attempt with its time.
    let (tx, ticks) = std::sync::mpsc::channel::<(Instant, DaemonTick)>();
    let daemon = {
        let a = a.clone();
        std::thread::spawn(move || {
            a.run_daemon(
                DaemonOptions {
                    interval: Duration::from_secs(3600),
                    backoff_base: Duration::from_millis(100),
                    max_backoff: Duration::from_millis(400),
                    probe_interval: Duration::from_millis(100),
                    poll_interval: Duration::from_millis(50),
                    // Backoff timings only: no stream reconnecting beside them.
                    stream: false,
                    stream_interval: Duration::from_secs(3600),
                },
                &mut |t| {
                    let _ = tx.send((Instant::now(), t.clone()));
                },
            )
        })
    };
    // Five failed attempts: the announced wait doubles from 100 ms and stops at the 400 ms
    // cap, and each next attempt comes after that wait (not sooner, and not much later).
    let mut failed: Vec<(Instant, f64)> = Vec::new();
    while failed.len() < 5 {
        let (at, tick) = ticks
            .recv_timeout(Duration::from_secs(20))
            .expect("the daemon did not retry");
        match tick {
            DaemonTick::Failed {
                retryable,
                failures,
                retry_in_secs,
                error,
            } => {
                assert!(retryable, "{error}");
                assert_eq!(failures as usize, failed.len() + 1, "{error}");
                failed.push((at, retry_in_secs));
            }
            other => panic!("synced against a dead server: {other:?}"),
        }
    }
    let announced: Vec<f64> = failed.iter().map(|f| f.1).collect();
    assert_eq!(announced, [0.1, 0.2, 0.4, 0.4, 0.4], "backoff per failure");
    for w in failed.windows(2) {
        let gap = w[1].0.duration_since(w[0].0).as_secs_f64();
        let wait = w[0].1;
        // Early is a bug; late by more than the daemon's 50 ms poll (plus a loaded machine's
        // slack) is one too: an uncapped backoff would wait 0.8 s and 1.6 s here.
        assert!(
            gap >= wait - 0.005 && gap < wait + 0.3,
            "attempts {gap:.3} s apart after a {wait} s backoff (all: {:?})",
            failed
                .windows(2)
                .map(|w| w[1].0.duration_since(w[0].0).as_secs_f64())
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(a.status().unwrap().in_flight, 1, "nothing lost while down");
    // The server comes back: the probe notices and the daemon syncs.
    a.set_setting("server_url", &app.base).unwrap();
    loop {
        let (_, tick) = ticks
            .recv_timeout(Duration::from_secs(20))
            .expect("daemon did not sync after recovery");
        if let DaemonTick::Synced { report } = tick {
            assert_eq!(report.sent, 1, "{report:?}");
            break;
        }
    }
    a.request_stop();
    daemon.join().unwrap().unwrap();
    assert_memo(&app, &u, "while down");
    assert_eq!(a.status().unwrap().in_flight, 0);
}

/// The server holds the memo at version 1 with exactly this text.
fn assert_memo(app: &TestApp, uuid: &str, text: &str) {
    let (s, memo) = app.entity("Memo", uuid);
    assert_eq!(s, 200, "{memo}");
    assert_eq!(
        (
            memo["data"].clone(),
            memo["version"].clone(),
            memo["deleted"].clone()
        ),
        (json!({"text": text}), json!(1), json!(false)),
        "{memo}"
    );
}

#[test]
fn a_failed_init_force_keeps_the_existing_node() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d, &app.base, "KEEP");
    let created = ok(d, &["create", "Note", r#"{"text": "local work"}"#]);
    let uuid = created["entity_uuid"]
        .as_str()
        .or_else(|| created["uuid"].as_str())
        .unwrap_or_else(|| panic!("create printed no uuid: {created}"))
        .to_string();
    let before = ok(d, &["status"]);
    // Re-initializing with a code that is taken fails at the server...
    app.register("TAKEN");
    let (code, v) = node(
        d,
        &[
            "init",
            "--force",
            "--server",
            &app.base,
            "--code",
            "TAKEN",
            "--admin-token",
            ADMIN,
        ],
    );
    assert_ne!(code, 0, "{v}");
    // ...and the node's database, with its unsent work, is still there.
    let got = ok(d, &["get", "Note", &uuid]);
    assert!(got.to_string().contains("local work"), "{got}");
    let after = ok(d, &["status"]);
    assert_eq!(
        after["node"], before["node"],
        "the node's identity is unchanged"
    );
    assert_eq!(after["node"]["code"], "KEEP", "{after}");
    assert_eq!(after["status"]["pending"], 1, "{after}");
    // ...and it still syncs with its old registration.
    let r = sync(d);
    assert_eq!(r["sent"], 1, "{r}");
    let (s, note) = app.entity("Note", &uuid);
    assert_eq!(s, 200, "{note}");
    assert_eq!(note["data"], json!({"text": "local work"}));
}
