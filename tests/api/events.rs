//! Live notification (PROTOCOL §12): `GET /api/sync/events` over HTTP, and the node library's
//! daemon reacting to it. Every wait is on an event with a generous deadline, never a sleep.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use starsync_node::{DaemonOptions, InitOptions, Node, NodeEvent, NodeOptions};

use crate::helpers::*;

/// Long enough for a loaded CI machine; the events themselves take milliseconds.
const LONG: Duration = Duration::from_secs(15);

/// One open event stream, read on a thread: each event (or comment) arrives on `rx`. Over a
/// raw socket, so that dropping it really hangs up (as a client going away does).
struct Stream {
    rx: Receiver<Sse>,
    socket: TcpStream,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

#[derive(Debug, Clone)]
enum Sse {
    Event {
        kind: String,
        data: Value,
    },
    Comment,
    /// The server ended the stream.
    Closed,
}

impl Stream {
    /// Opens the stream at `base` with `token`: the stream when the answer is 200, otherwise
    /// the status and the JSON error body.
    fn open(base: &str, token: Option<&str>) -> Result<Stream, (u16, Value)> {
        let addr = base.strip_prefix("http://").unwrap();
        let mut socket = TcpStream::connect(addr).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            socket,
            "GET /api/sync/events HTTP/1.1\r\nHost: {addr}\r\n{auth}Accept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if status != 200 {
            assert_eq!(header("content-type").as_deref(), Some("application/json"));
            let len: usize = header("content-length").unwrap().parse().unwrap();
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            return Err((status, serde_json::from_slice(&body).unwrap()));
        }
        assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
        assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let (mut kind, mut data) = (String::new(), String::new());
            // HTTP/1.1 chunks, then SSE lines within the text they carry.
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).unwrap_or(0) == 0 {
                    break;
                }
                let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
                while let Some(end) = text.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = text.drain(..=end).collect();
                    let line = String::from_utf8(line).unwrap();
                    let line = line.trim_end();
                    if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_string();
                    } else if line.starts_with(':') {
                        let _ = tx.send(Sse::Comment);
                    } else if line.is_empty() && !kind.is_empty() {
                        let data = serde_json::from_str(&data).expect("event data is JSON");
                        let _ = tx.send(Sse::Event {
                            kind: std::mem::take(&mut kind),
                            data,
                        });
                    }
                }
            }
            let _ = tx.send(Sse::Closed);
        });
        Ok(Stream { rx, socket })
    }

    /// The next event of `kind` (skipping comments and other kinds), within `limit`.
    fn next(&self, kind: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Sse::Event { kind: k, data }) if k == kind => return data,
                Ok(Sse::Closed) => panic!("the stream ended while waiting for `{kind}`"),
                Ok(_) => {}
                Err(_) => panic!("no `{kind}` event within {limit:?}"),
            }
        }
    }

    /// Waits until the server ends the stream.
    fn closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Sse::Closed) => return,
                Ok(_) => {}
                Err(_) => panic!("the stream did not end within {limit:?}"),
            }
        }
    }
}

/// The hub's log position now: the `cursor` a freshly opened stream reports at once.
fn log_position(app: &TestApp, token: &str) -> i64 {
    let probe = Stream::open(&app.base, Some(token)).unwrap();
    probe.next("pending", LONG)["cursor"].as_i64().unwrap()
}

#[test]
fn a_stream_hears_other_nodes_changes_but_not_its_own() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let stream = Stream::open(&app.base, Some(&a.token)).unwrap();
    let first = stream.next("pending", LONG);
    assert_eq!(first, json!({"pending_changes": 0, "cursor": 0}));

    // Another node's change: A hears it, with its queue and the log position.
    let u = new_uuid();
    let ex = b.sync(&app, vec![upsert("Memo", &u, 0, json!({"text": "from B"}))]);
    assert_eq!(ex.status, 200, "{:?}", ex.body);
    let ev = stream.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    let after_b = ev["cursor"].as_i64().unwrap();
    assert!(after_b > 0, "{ev}");

    // A takes it and writes a change of its own, applied as sent: nothing new for A.
    let ex = a.sync(&app, vec![]);
    assert_eq!(ex.changes().len(), 1);
    let own = new_uuid();
    let ex = a.sync(
        &app,
        vec![upsert("Memo", &own, 0, json!({"text": "from A"}))],
    );
    assert_eq!(ex.status, 200, "{:?}", ex.body);
    // Well past the coalescing window, so an event caused by A's own change would come first…
    std::thread::sleep(Duration::from_millis(400));
    let u2 = new_uuid();
    b.sync(
        &app,
        vec![upsert("Memo", &u2, 0, json!({"text": "B again"}))],
    );
    // …and carry the log position of A's own change, not B's later one.
    let ev = stream.next("pending", LONG);
    let now = log_position(&app, &b.token);
    assert_eq!(
        ev["cursor"].as_i64().unwrap(),
        now,
        "the first event after A's own change must be B's ({ev})"
    );
    assert_eq!(ev["pending_changes"], 1, "only B's new change waits: {ev}");
}

#[test]
fn a_change_whose_stored_state_differs_reaches_its_author_too() {
    // An admin write has no holder: every node, including one that wrote earlier, hears it.
    let app = TestApp::spawn();
    let a = app.register("A");
    let stream = Stream::open(&app.base, Some(&a.token)).unwrap();
    stream.next("pending", LONG);
    let u = new_uuid();
    let (s, body) = app.put(
        &format!("/api/sync/entities/Memo/{u}"),
        Some(ADMIN),
        &json!({"data": {"text": "admin"}}),
    );
    assert!(s == 200 || s == 201, "{s} {body}");
    let ev = stream.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
}

#[test]
fn auth_no_token_unknown_token_disabled_node_and_the_admin_stream() {
    let app = TestApp::spawn();
    for token in [None, Some("sst_unknown")] {
        let (status, body) = Stream::open(&app.base, token).err().unwrap();
        assert_eq!(status, 401);
        assert_eq!(body["error"], "unauthorized", "{body}");
        assert!(body["message"].as_str().unwrap().len() > 5);
    }

    let admin = Stream::open(&app.base, Some(ADMIN)).unwrap();
    let mut a = app.register("A");
    let ev = admin.next("node", LONG);
    assert_eq!(ev["action"], "registered");
    assert_eq!(ev["node_code"], "A");
    let mut b = app.register("B");
    admin.next("node", LONG);

    // An exchange, and a conflict (B writes on a version it has not seen).
    let u = new_uuid();
    a.sync(&app, vec![upsert("Memo", &u, 0, json!({"n": 1}))]);
    let ev = admin.next("exchange", LONG);
    assert_eq!(ev["node_code"], "A");
    assert_eq!(ev["processed"], 1);
    a.sync(&app, vec![upsert("Memo", &u, 1, json!({"n": 2}))]);
    let ex = b.sync(&app, vec![upsert("Memo", &u, 1, json!({"n": 3}))]);
    assert_eq!(ex.body["conflict_count"], 1, "{:?}", ex.body);
    let ev = admin.next("conflict", LONG);
    assert_eq!(ev["node_code"], "B");
    assert_eq!(ev["conflict"]["entity_uuid"], u.as_str());

    // A node's open stream ends when the node is disabled, and its token opens no other.
    let stream = Stream::open(&app.base, Some(&b.token)).unwrap();
    stream.next("pending", LONG);
    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/disable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let ev = admin.next("node", LONG);
    assert_eq!(ev["action"], "disabled");
    stream.closed(LONG);
    let (status, body) = Stream::open(&app.base, Some(&b.token)).err().unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized", "{body}");
}

#[test]
fn the_stream_limit_answers_503_and_frees_places() {
    // A short keep-alive: a client that vanished is noticed when a write to it fails.
    let app = TestApp::spawn_with(
        "",
        &[
            ("STARSYNC_MAX_EVENT_STREAMS", "2"),
            ("STARSYNC_EVENT_KEEPALIVE_SECS", "1"),
        ],
    );
    let a = app.register("A");
    let first = Stream::open(&app.base, Some(&a.token)).unwrap();
    first.next("pending", LONG);
    let second = Stream::open(&app.base, Some(ADMIN)).unwrap();
    let (status, body) = Stream::open(&app.base, Some(&a.token)).err().unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["error"], "too_many_streams", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_event_streams"),
        "{body}"
    );
    // A client that hangs up gives its place back.
    drop(first);
    drop(second);
    let deadline = Instant::now() + LONG;
    let again = loop {
        match Stream::open(&app.base, Some(&a.token)) {
            Ok(s) => break s,
            Err((503, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("no place freed: {e:?}"),
        }
    };
    again.next("pending", LONG);
}

#[test]
fn two_processes_on_postgres_a_write_on_one_reaches_a_stream_on_the_other() {
    let app = TestApp::spawn();
    if !app.db.as_ref().unwrap().is_postgres() {
        eprintln!("skipped: several server processes share a database on PostgreSQL only");
        return;
    }
    let one = ServerProcess::spawn(&app);
    let two = ServerProcess::spawn(&app);
    let a = app.register("A");
    let mut b = app.register("B");
    let stream = Stream::open(&two.base, Some(&a.token)).unwrap();
    stream.next("pending", LONG);
    let u = new_uuid();
    let ex = b.sync_at(
        &one.base,
        vec![upsert("Memo", &u, 0, json!({"text": "via one"}))],
    );
    assert_eq!(ex.status, 200, "{:?}", ex.body);
    let ev = stream.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
}

#[test]
fn a_process_that_loses_its_listening_connection_reconnects_and_tells_every_stream() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, RunQueryDsl};
    let app = TestApp::spawn();
    let db = app.db.as_ref().unwrap();
    if !db.is_postgres() {
        eprintln!("skipped: the listening connection exists on PostgreSQL only");
        return;
    }
    let a = app.register("A");
    let stream = Stream::open(&app.base, Some(&a.token)).unwrap();
    stream.next("pending", LONG);
    let url = db.url(&app.path());
    let mut admin = diesel::PgConnection::establish(&url).unwrap();
    // Ended by the database, as a restart or a network cut would.
    let deadline = Instant::now() + LONG;
    loop {
        let killed: Vec<KilledRow> = diesel::sql_query(
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
             WHERE application_name = 'starsync-listen' AND datname = current_database()",
        )
        .load(&mut admin)
        .unwrap();
        if !killed.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no listening connection found");
        std::thread::sleep(Duration::from_millis(50));
    }
    admin.batch_execute("SELECT 1").unwrap();
    // Nothing was written: the only reason for another event is the reconnection.
    let ev = stream.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 0, "{ev}");
}

#[derive(diesel::QueryableByName)]
struct KilledRow {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    #[allow(dead_code)]
    ok: bool,
}

// ---- scopes (PROTOCOL §10): a stream hears only what its node may receive ----

/// The coalescing window (100 ms) and then some: an event a commit caused arrives well within.
const QUIET: Duration = Duration::from_millis(500);

impl Stream {
    /// Asserts that no `pending` event arrives (and the stream stays open) for `limit`.
    fn quiet(&self, limit: Duration, why: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Sse::Event { kind, data }) if kind == "pending" => {
                    panic!("unexpected `pending` ({why}): {data}")
                }
                Ok(Sse::Closed) => panic!("the stream ended ({why})"),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}

/// Opens a node's stream and takes its first `pending` (sent at once on every stream).
fn open_node_stream(app: &TestApp, node: &TestNode) -> Stream {
    let s = Stream::open(&app.base, Some(&node.token)).unwrap();
    s.next("pending", LONG);
    s
}

/// Takes everything waiting for `node` and acknowledges it (`drain` leaves its last packet
/// unacknowledged, so it would still count in `pending_changes`).
fn take_all(app: &TestApp, node: &mut TestNode) -> Vec<Value> {
    let got = node.drain(app);
    let ex = node.sync(app, vec![]);
    assert!(ex.changes().is_empty(), "{:?}", ex.packet);
    got
}

/// A `Doc` in scope `tenant`, written by `node` (which names the scope, so it is stored as
/// sent).
fn write_doc(app: &TestApp, node: &mut TestNode, tenant: &str) -> String {
    let u = new_uuid();
    let ex = node.sync(
        app,
        vec![upsert("Doc", &u, 0, json!({"tenant_id": tenant, "t": 1}))],
    );
    assert_eq!(ex.status, 200, "{:?}", ex.body);
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    u
}

#[test]
fn a_scoped_stream_hears_its_scope_and_global_types_but_not_other_scopes() {
    use crate::scopes::{admin_put, node_with, scoped_app};
    let app = scoped_app();
    let mut la = node_with(&app, "LA", &["fam-a"], None);
    let mut ls = node_with(&app, "LS", &["*"], None);
    let mut wa = node_with(&app, "WA", &["fam-a"], None);
    let mut wb = node_with(&app, "WB", &["fam-b"], None);
    let sa = open_node_stream(&app, &la);
    let ss = open_node_stream(&app, &ls);

    // Another scope's write: the `*` node hears it, the fam-a node does not…
    write_doc(&app, &mut wb, "fam-b");
    let ev = ss.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    sa.quiet(QUIET, "a write in fam-b woke a fam-a-only stream");

    // …while its stream is alive: a write in its own scope arrives, and its count holds only
    // that one.
    let u = write_doc(&app, &mut wa, "fam-a");
    let ev = sa.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    let ev = ss.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 2, "{ev}");
    let got = take_all(&app, &mut la);
    assert_eq!(crate::scopes::ids(&got), vec![u], "{got:?}");

    // A global type concerns every scope.
    let c = new_uuid();
    admin_put(&app, "Country", &c, json!({"name": "FR"}));
    let ev = sa.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    ss.next("pending", LONG);
    let got = take_all(&app, &mut la);
    assert_eq!(crate::scopes::ids(&got), vec![c], "{got:?}");
    take_all(&app, &mut ls);
}

#[test]
fn an_entity_moving_between_scopes_wakes_the_scope_it_left_and_the_one_it_entered() {
    use crate::scopes::{admin_put, node_with, ops, scoped_app};
    let app = scoped_app();
    let mut la = node_with(&app, "LA", &["fam-a"], None);
    let mut lb = node_with(&app, "LB", &["fam-b"], None);
    let mut ls = node_with(&app, "LS", &["*"], None);
    let u = new_uuid();
    admin_put(&app, "Doc", &u, json!({"tenant_id": "fam-a", "t": 1}));
    assert_eq!(take_all(&app, &mut la).len(), 1);
    assert!(take_all(&app, &mut lb).is_empty());
    assert_eq!(take_all(&app, &mut ls).len(), 1);
    let sa = open_node_stream(&app, &la);
    let sb = open_node_stream(&app, &lb);

    // The admin moves it to fam-b: fam-a gets a DELETE, fam-b the state (with its log
    // operation, an update).
    admin_put(&app, "Doc", &u, json!({"tenant_id": "fam-b", "t": 2}));
    let ev = sa.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    let ev = sb.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    assert_eq!(
        ops(&take_all(&app, &mut la)),
        vec![("Doc".into(), u.clone(), "DELETE".into())]
    );
    let got = take_all(&app, &mut lb);
    assert_eq!(crate::scopes::ids(&got), vec![u.clone()]);
    assert_ne!(got[0]["operation"], "DELETE", "{got:?}");
    assert_eq!(got[0]["data"]["tenant_id"], "fam-b", "{got:?}");

    // A `*` node moves it back (its own write, applied as sent: it holds that state).
    assert_eq!(take_all(&app, &mut ls).len(), 1);
    let v = ls.version_of("Doc", &u);
    let ex = ls.sync(
        &app,
        vec![upsert("Doc", &u, v, json!({"tenant_id": "fam-a", "t": 3}))],
    );
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
    let ev = sb.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    let ev = sa.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    assert_eq!(
        ops(&take_all(&app, &mut lb)),
        vec![("Doc".into(), u.clone(), "DELETE".into())]
    );
    let back = take_all(&app, &mut la);
    assert_eq!(crate::scopes::ids(&back), vec![u.clone()]);
    assert_ne!(back[0]["operation"], "DELETE", "{back:?}");
    assert_eq!(back[0]["data"]["t"], 3, "{back:?}");
}

#[test]
fn changing_a_nodes_scopes_ends_its_stream_and_the_next_one_hears_the_new_scope() {
    use crate::scopes::{node_with, scoped_app};
    let app = scoped_app();
    let mut la = node_with(&app, "LA", &["fam-a"], None);
    let mut wb = node_with(&app, "WB", &["fam-b"], None);
    let admin = Stream::open(&app.base, Some(ADMIN)).unwrap();
    let old = open_node_stream(&app, &la);
    write_doc(&app, &mut wb, "fam-b");
    old.quiet(QUIET, "fam-b is not yet the node's");

    let (s, body) = app.patch(
        &format!("/api/sync/nodes/{}", la.id),
        Some(ADMIN),
        &json!({"scopes": ["fam-a", "fam-b"]}),
    );
    assert_eq!(s, 200, "{body}");
    old.closed(LONG);
    let ev = admin.next("node", LONG);
    assert_eq!(ev["action"], "view_changed", "{ev}");
    assert_eq!(ev["node_code"], "LA", "{ev}");

    // The new stream starts with the gained scope's entity pending, and hears fam-b's writes.
    let new = Stream::open(&app.base, Some(&la.token)).unwrap();
    let ev = new.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    assert_eq!(take_all(&app, &mut la).len(), 1);
    let u = write_doc(&app, &mut wb, "fam-b");
    let ev = new.next("pending", LONG);
    assert_eq!(ev["pending_changes"], 1, "{ev}");
    assert_eq!(crate::scopes::ids(&take_all(&app, &mut la)), vec![u]);

    // Losing a scope ends the stream too, and the next one no longer hears it.
    let (s, body) = app.patch(
        &format!("/api/sync/nodes/{}", la.id),
        Some(ADMIN),
        &json!({"scopes": ["fam-a"]}),
    );
    assert_eq!(s, 200, "{body}");
    new.closed(LONG);
    let last = Stream::open(&app.base, Some(&la.token)).unwrap();
    last.next("pending", LONG);
    take_all(&app, &mut la);
    write_doc(&app, &mut wb, "fam-b");
    last.quiet(QUIET, "fam-b was lost");
}

// ---- the node library's daemon ----

fn lib_node(dir: &std::path::Path, base: &str, code: &str) -> Node {
    let opts = InitOptions::register(base, code).admin_token(ADMIN);
    Node::init_with(dir, opts, None, NodeOptions::default()).unwrap()
}

/// A daemon that can only sync because of the stream: no timed sync for an hour.
fn stream_only() -> DaemonOptions {
    DaemonOptions {
        interval: Duration::from_secs(3600),
        stream_interval: Duration::from_secs(3600),
        backoff_base: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        probe_interval: Duration::from_millis(100),
        ..DaemonOptions::default()
    }
}

/// Waits for the first event `pick` accepts.
fn wait_event(rx: &Receiver<NodeEvent>, what: &str, pick: impl Fn(&NodeEvent) -> bool) {
    let deadline = Instant::now() + LONG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if pick(&e) => return,
            Ok(_) => {}
            Err(_) => panic!("no {what} within {LONG:?}"),
        }
    }
}

fn live(connected: bool) -> impl Fn(&NodeEvent) -> bool {
    move |e| matches!(e, NodeEvent::LiveStream { connected: c } if *c == connected)
}

fn received(e: &NodeEvent) -> bool {
    matches!(e, NodeEvent::DataChanged { .. })
}

#[test]
fn the_daemon_syncs_when_the_stream_says_pending() {
    let app = TestApp::spawn();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = lib_node(da.path(), &app.base, "A");
    let b = lib_node(db.path(), &app.base, "B");
    let events = b.subscribe();
    let daemon = b.spawn_daemon(stream_only());
    wait_event(&events, "a connected stream", live(true));

    for i in 0..3 {
        let (u, _) = a.create("Memo", &json!({"i": i})).unwrap();
        a.sync().unwrap();
        wait_event(&events, "data from A", received);
        let got: Value = b.get("Memo", &u).unwrap().unwrap().data.parse().unwrap();
        assert_eq!(got["i"], i);
    }
    daemon.stop().unwrap();
}

/// A TCP relay to the server that a test can cut (every open connection) and pause (new
/// connections are closed at once), to kill a node's stream from outside.
struct Relay {
    base: String,
    paused: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let paused = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (p, o) = (paused.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if p.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                {
                    let mut o = o.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { base, paused, open }
    }

    /// Closes every open connection, and refuses new ones while `pause`.
    fn cut(&self, pause: bool) {
        self.paused.store(pause, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_killed_stream_is_replaced_and_nothing_is_lost() {
    let app = TestApp::spawn();
    let relay = Relay::to(app.port);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = lib_node(da.path(), &app.base, "A");
    let b = lib_node(db.path(), &relay.base, "B");
    let events = b.subscribe();
    let daemon = b.spawn_daemon(stream_only());
    wait_event(&events, "a connected stream", live(true));

    // The stream dies, and stays unreachable while A writes.
    relay.cut(true);
    wait_event(&events, "the stream closing", live(false));
    let (lost, _) = a
        .create("Memo", &json!({"text": "while B's stream was down"}))
        .unwrap();
    a.sync().unwrap();

    // It comes back by itself; what was written meanwhile arrives without any poll.
    relay.resume();
    wait_event(&events, "the stream reconnecting", live(true));
    wait_event(&events, "the change made while it was down", received);
    assert!(b.get("Memo", &lost).unwrap().is_some());

    // And the new stream carries the next change as the first one did.
    let (next, _) = a.create("Memo", &json!({"text": "after"})).unwrap();
    a.sync().unwrap();
    wait_event(&events, "the next change", received);
    assert!(b.get("Memo", &next).unwrap().is_some());
    daemon.stop().unwrap();
}
