//! Offline transfer (PROTOCOL §7) and the admin CLI, with `starsync` run as a process against
//! the same database as a running server.
use crate::helpers::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use starsync_protocol::codec;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs the CLI and requires success.
fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let o = app.cli(args);
    assert!(
        o.status.success(),
        "starsync {args:?} failed ({:?})\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs the CLI with `--json` and parses its output.
fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cli_ok(app, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {out}"))
}

/// Runs the CLI and requires failure with a message on stderr.
fn cli_err(app: &TestApp, args: &[&str]) -> String {
    let o = app.cli(args);
    assert!(
        !o.status.success(),
        "starsync {args:?} should fail\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("error"), "stderr names the error: {err}");
    err
}

/// Runs a command and returns its output, killing it when it runs longer than `limit` (a
/// command that blocks forever — reading a FIFO — must fail the test, not hang it).
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still running after {limit:?}\nstdout: {}\nstderr: {}",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The `starsync` CLI of this app, bounded to 60 seconds.
fn cli_within(app: &TestApp, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starsync"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(app.path());
    for (k, v) in app.cli_env() {
        cmd.env(k, v);
    }
    output_within(&mut cmd, Duration::from_secs(60))
}

/// Makes a FIFO (named pipe) at `path`.
pub(crate) fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// Writes a node packet as a `.syncpkt` file (raw gzip bytes) under its protocol name.
fn write_packet(dir: &Path, node: &TestNode, packet: &Value) -> PathBuf {
    let no = packet["packet_no"].as_u64().unwrap();
    let path = dir.join(format!("{}-to-server-{no:08}.syncpkt", node.code));
    std::fs::write(&path, codec::gzip_bytes(packet.to_string().as_bytes())).unwrap();
    path
}

/// Reads a `.syncpkt` file written by the server.
fn read_packet(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let json = codec::inflate_limited(&bytes, 1 << 30).expect("a gzip packet");
    serde_json::from_slice(&json).expect("packet JSON")
}

fn dir_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn syncpkt_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".syncpkt"))
        .collect();
    names.sort();
    names
}

fn entity(app: &TestApp, t: &str, u: &str) -> Value {
    let (s, body) = app.entity(t, u);
    assert_eq!(s, 200, "{body}");
    body
}

/// A TestNode for a node registered through the CLI.
fn node_from(app: &TestApp, code: &str, id: &str, token: &str) -> TestNode {
    TestNode {
        id: id.to_string(),
        token: token.to_string(),
        code: code.to_string(),
        server_id: app.server_id.clone(),
        next_packet_no: 1,
        acked: 0,
        entities: Default::default(),
    }
}

// ---------------------------------------------------------------- import

#[test]
fn import_applies_a_directory_in_packet_no_order_and_reports() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    let u2 = new_uuid();
    let w = new_uuid();
    // B owns w and changed it after A's base: A's file edit of w will conflict.
    assert_eq!(
        b.sync(&app, vec![upsert("Note", &w, 0, json!({"w": "b1"}))])
            .status,
        200
    );
    assert_eq!(
        b.sync(&app, vec![upsert("Note", &w, 1, json!({"w": "b2"}))])
            .status,
        200
    );

    let p1 = a.packet(1, 0, vec![upsert("Note", &u, 0, json!({"x": 1}))]);
    let p2 = a.packet(
        2,
        0,
        vec![
            upsert("Note", &u, 1, json!({"x": 2})),
            upsert("1bad", &new_uuid(), 0, json!({})),
        ],
    );
    let p3 = a.packet(
        3,
        0,
        vec![
            upsert("Note", &u, 2, json!({"x": 3})),
            upsert("Note", &u2, 0, json!({"y": 1})),
            upsert("Note", &w, 1, json!({"w": "a"})),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    // Written out of order; applying them in any other order than 1, 2, 3 hits a gap.
    for p in [&p3, &p1, &p2] {
        write_packet(dir.path(), &a, p);
    }
    let out = cli_ok(&app, &["import", dir_str(dir.path())]);
    assert!(out.contains("3 applied"), "{out}");
    assert!(out.contains("0 duplicates"), "{out}");
    assert!(out.contains("0 failed"), "{out}");
    assert!(out.contains("5 changes processed"), "{out}");
    assert!(out.contains("1 rejected"), "{out}");
    assert!(out.contains("1 conflicts"), "{out}");
    let pos = |n: &str| out.find(&format!("A-to-server-{n}.syncpkt")).expect(n);
    assert!(
        pos("00000001") < pos("00000002") && pos("00000002") < pos("00000003"),
        "{out}"
    );

    let e = entity(&app, "Note", &u);
    assert_eq!(e["version"], 3);
    assert_eq!(e["data"], json!({"x": 3}));
    assert_eq!(entity(&app, "Note", &u2)["version"], 1);
    assert_eq!(entity(&app, "Note", &w)["data"], json!({"w": "b2"}));
    let rows = app.conflicts(&format!("?entity_uuid={w}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["source_node_id"], a.id.as_str());
    assert_eq!(rows[0]["serialized_data"], json!({"w": "a"}));
    assert_eq!(app.node_status(&a)["received_packet_no"], 3);

    // Importing the same files again applies nothing twice.
    let report = cli_json(&app, &["import", dir_str(dir.path())]);
    assert_eq!(report["applied"], 0, "{report}");
    assert_eq!(report["duplicates"], 3, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["processed"], 0, "{report}");
    assert_eq!(report["conflicts"], 0, "{report}");
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f["duplicate"] == true), "{report}");
    assert_eq!(entity(&app, "Note", &u)["version"], 3);
    assert_eq!(app.conflicts("").len(), 1);

    // File and HTTP numbers are one sequence: A's next HTTP packet is 4.
    let mut a = a;
    a.next_packet_no = 4;
    let ex = a.sync(&app, vec![upsert("Note", &u, 3, json!({"x": 4}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["duplicate"], false);
    assert_eq!(entity(&app, "Note", &u)["version"], 4);
    // A lost the conflict on w: it receives B's state; its own u and u2 are not echoed.
    let got = ex.changes();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["entity_uuid"], json!(w));
    assert_eq!(got[0]["data"], json!({"w": "b2"}));
    // B receives A's changes (u at its latest state, u2) once, and not its own w.
    let got = b.drain(&app);
    let uuids: Vec<&str> = got
        .iter()
        .map(|c| c["entity_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(uuids.contains(&u.as_str()) && uuids.contains(&u2.as_str()));
}

#[test]
fn a_gap_in_the_files_fails_the_import_and_applies_nothing_past_it() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let u = new_uuid();
    let dir = tempfile::tempdir().unwrap();
    let p1 = a.packet(1, 0, vec![upsert("Note", &u, 0, json!({"x": 1}))]);
    let p2 = a.packet(2, 0, vec![upsert("Note", &u, 1, json!({"x": 2}))]);
    let p3 = a.packet(3, 0, vec![upsert("Note", &u, 2, json!({"x": 3}))]);
    write_packet(dir.path(), &a, &p1);
    let f3 = write_packet(dir.path(), &a, &p3);

    let o = app.cli(&["--json", "import", dir_str(dir.path())]);
    assert!(!o.status.success(), "a gap must fail: {}", stdout(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    assert_eq!(report["applied"], 1, "{report}");
    assert_eq!(report["failed"], 1, "{report}");
    let failed = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f.get("error").is_some())
        .expect("the failed file is named")
        .clone();
    assert!(failed["file"]
        .as_str()
        .unwrap()
        .ends_with("A-to-server-00000003.syncpkt"));
    assert!(
        failed["error"].as_str().unwrap().contains('2'),
        "names the expected packet: {failed}"
    );
    assert_eq!(entity(&app, "Note", &u)["version"], 1);
    assert_eq!(app.node_status(&a)["received_packet_no"], 1);

    // Text mode says FAILED and exits non-zero too.
    let o = app.cli(&["import", f3.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("FAILED"), "{}", stdout(&o));

    // With the missing file the import completes.
    write_packet(dir.path(), &a, &p2);
    let report = cli_json(&app, &["import", dir_str(dir.path())]);
    assert_eq!(report["applied"], 2, "{report}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(entity(&app, "Note", &u)["data"], json!({"x": 3}));
}

#[test]
fn import_refuses_bad_files_and_foreign_packets() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("A-to-server-00000001.syncpkt");
    std::fs::write(&garbage, b"this is not gzip").unwrap();
    let o = app.cli(&["import", garbage.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("FAILED"), "{}", stdout(&o));

    // A packet from a node the server does not know.
    let stranger = TestNode {
        id: new_uuid(),
        ..node_from(&app, "X", "", "")
    };
    let u = new_uuid();
    let f = write_packet(
        dir.path(),
        &stranger,
        &stranger.packet(1, 0, vec![upsert("Note", &u, 0, json!({}))]),
    );
    let o = app.cli(&["import", f.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(app.entity("Note", &u).0, 404);

    // A packet addressed to another server.
    let mut p = a.packet(1, 0, vec![upsert("Note", &u, 0, json!({}))]);
    p["receiver_node_id"] = json!(new_uuid());
    let f = write_packet(dir.path(), &a, &p);
    let o = app.cli(&["import", f.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(app.entity("Note", &u).0, 404);
    assert_eq!(app.node_status(&a)["received_packet_no"], 0);

    // Nothing to import, or a path that does not exist.
    let empty = tempfile::tempdir().unwrap();
    cli_err(&app, &["import", dir_str(empty.path())]);
    // A missing file is reported like any failed file: in the report, with a non-zero exit.
    let o = app.cli(&["import", "/nonexistent/starsync/none.syncpkt"]);
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("FAILED") && out.contains("none.syncpkt"),
        "{out}"
    );
}

#[test]
fn import_reads_only_regular_files_within_the_body_limit() {
    let app = TestApp::spawn_with("", &[("STARSYNC_MAX_BODY_BYTES", "4096")]);
    let a = app.register("A");
    let dir = tempfile::tempdir().unwrap();

    // A FIFO named like a packet: refused at once (reading it would wait for a writer forever).
    let fifo = dir.path().join("A-to-server-00000009.syncpkt");
    mkfifo(&fifo);
    let o = cli_within(&app, &["import", fifo.to_str().unwrap()]);
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("FAILED") && out.contains(fifo.to_str().unwrap()) && out.contains("FIFO"),
        "{out}"
    );

    // A link to /dev/zero named like a packet: refused, not read until memory runs out.
    let zero = dir.path().join("x.syncpkt");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let o = cli_within(&app, &["--json", "import", zero.to_str().unwrap()]);
    assert!(!o.status.success());
    let report: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let error = report["files"][0]["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("x.syncpkt") && error.contains("character device"),
        "{report}"
    );

    // A file over the body limit: refused with the path, its size, the limit and the setting.
    let big = dir.path().join("A-to-server-00000001.syncpkt");
    std::fs::write(&big, vec![0x1fu8; 5000]).unwrap();
    let o = cli_within(&app, &["import", big.to_str().unwrap()]);
    assert!(!o.status.success());
    let out = stdout(&o);
    for needle in [
        big.to_str().unwrap(),
        "5000 bytes",
        "4096",
        "STARSYNC_MAX_BODY_BYTES",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    assert_eq!(app.node_status(&a)["received_packet_no"], 0);

    // A directory is walked for regular packet files: the FIFO and the link are skipped, the
    // good packet is applied.
    std::fs::remove_file(&big).unwrap();
    let u = new_uuid();
    write_packet(
        dir.path(),
        &a,
        &a.packet(1, 0, vec![upsert("Note", &u, 0, json!({"x": 1}))]),
    );
    let report = cli_json(&app, &["import", dir_str(dir.path())]);
    assert_eq!(report["applied"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(entity(&app, "Note", &u)["version"], 1);
}

#[test]
fn a_disabled_nodes_files_are_not_applied() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let u = new_uuid();
    let dir = tempfile::tempdir().unwrap();
    let f = write_packet(
        dir.path(),
        &a,
        &a.packet(1, 0, vec![upsert("Note", &u, 0, json!({}))]),
    );
    cli_ok(&app, &["nodes", "disable", "A"]);
    let o = app.cli(&["import", f.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(app.entity("Note", &u).0, 404);
    cli_ok(&app, &["nodes", "enable", "A"]);
    cli_ok(&app, &["import", f.to_str().unwrap()]);
    assert_eq!(entity(&app, "Note", &u)["version"], 1);
}

// ---------------------------------------------------------------- export

#[test]
fn export_writes_the_next_packet_and_http_continues_the_numbering() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    assert_eq!(
        a.sync(&app, vec![upsert("Note", &u, 0, json!({"x": 1}))])
            .status,
        200
    );

    let out = tempfile::tempdir().unwrap();
    let sub = out.path().join("outbox");
    let report = cli_json(&app, &["export", "--node", "B", "--out", dir_str(&sub)]);
    assert_eq!(report["packet_no"], 1, "{report}");
    assert_eq!(report["changes"], 1, "{report}");
    assert_eq!(report["more"], false, "{report}");
    assert_eq!(syncpkt_files(&sub), vec!["server-to-B-00000001.syncpkt"]);
    assert!(report["file"]
        .as_str()
        .unwrap()
        .ends_with("server-to-B-00000001.syncpkt"));
    let p = read_packet(&sub.join("server-to-B-00000001.syncpkt"));
    assert_eq!(p["format"], 1);
    assert_eq!(p["sender_node_id"], app.server_id.as_str());
    assert_eq!(p["receiver_node_id"], b.id.as_str());
    assert_eq!(p["packet_no"], 1);
    assert_eq!(p["ack_packet_no"], 0);
    let changes = p["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["entity_uuid"], json!(u));
    assert_eq!(changes[0]["version"], 1);
    assert_eq!(changes[0]["data"], json!({"x": 1}));
    assert_eq!(app.node_status(&b)["sent_packet_no"], 1);

    // B applies the file and acknowledges it over HTTP: the answer is packet 2, without u.
    b.apply(&p);
    assert_eq!(b.acked, 1);
    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.packet.as_ref().unwrap()["packet_no"], 2);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    let st = app.node_status(&b);
    assert_eq!(st["acked_packet_no"], 1);
    assert_eq!(st["sent_packet_no"], 2);
    assert_eq!(st["pending_changes"], 0);

    // The next export continues after the HTTP packet and carries the newer state.
    assert_eq!(
        a.sync(&app, vec![upsert("Note", &u, 1, json!({"x": 2}))])
            .status,
        200
    );
    let text = cli_ok(&app, &["export", "--node", "B", "--out", dir_str(&sub)]);
    assert!(text.contains("server-to-B-00000003.syncpkt"), "{text}");
    let p3 = read_packet(&sub.join("server-to-B-00000003.syncpkt"));
    assert_eq!(p3["packet_no"], 3);
    assert_eq!(p3["ack_packet_no"], 1, "acknowledges B's HTTP packet");
    assert_eq!(p3["changes"][0]["data"], json!({"x": 2}));
    assert_eq!(p3["changes"][0]["version"], 2);
}

#[test]
fn a_failed_export_changes_nothing() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let b = app.register("B");
    let u = new_uuid();
    assert_eq!(
        a.sync(&app, vec![upsert("Note", &u, 0, json!({"x": 1}))])
            .status,
        200
    );
    let out = tempfile::tempdir().unwrap();
    // A full disk, for root too: the export's temporary file is a link to /dev/full.
    let tmp = out.path().join("server-to-B-00000001.syncpkt.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let err = cli_err(
        &app,
        &["export", "--node", "B", "--out", dir_str(out.path())],
    );
    assert!(
        err.contains(
            out.path()
                .join("server-to-B-00000001.syncpkt")
                .to_str()
                .unwrap()
        ),
        "the error names the file: {err}"
    );
    assert!(
        err.contains("No space left on device"),
        "the error says why: {err}"
    );
    assert_eq!(app.node_status(&b)["sent_packet_no"], 0, "no number used");
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "no file left behind"
    );
    // An output directory that cannot exist (a path under a device file).
    let err = cli_err(&app, &["export", "--node", "B", "--out", "/dev/null/out"]);
    assert!(err.contains("/dev/null/out"), "{err}");
    assert_eq!(app.node_status(&b)["sent_packet_no"], 0, "no number used");

    // The next export that can write uses packet 1 and carries the change.
    let report = cli_json(
        &app,
        &["export", "--node", "B", "--out", dir_str(out.path())],
    );
    assert_eq!(report["packet_no"], 1, "{report}");
    assert_eq!(
        syncpkt_files(out.path()),
        vec!["server-to-B-00000001.syncpkt"]
    );
    let p = read_packet(&out.path().join("server-to-B-00000001.syncpkt"));
    assert_eq!(p["changes"][0]["entity_uuid"], json!(u));
    assert_eq!(app.node_status(&b)["sent_packet_no"], 1);
}

#[test]
fn exporting_twice_before_an_acknowledgment_overlaps_harmlessly() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u1 = new_uuid();
    let u2 = new_uuid();
    assert_eq!(
        a.sync(&app, vec![upsert("Note", &u1, 0, json!({"n": 1}))])
            .status,
        200
    );
    let out = tempfile::tempdir().unwrap();
    cli_ok(
        &app,
        &["export", "--node", "B", "--out", dir_str(out.path())],
    );
    assert_eq!(
        a.sync(&app, vec![upsert("Note", &u2, 0, json!({"n": 2}))])
            .status,
        200
    );
    cli_ok(
        &app,
        &["export", "--node", "B", "--out", dir_str(out.path())],
    );
    assert_eq!(
        syncpkt_files(out.path()),
        vec![
            "server-to-B-00000001.syncpkt",
            "server-to-B-00000002.syncpkt"
        ]
    );
    let p1 = read_packet(&out.path().join("server-to-B-00000001.syncpkt"));
    let p2 = read_packet(&out.path().join("server-to-B-00000002.syncpkt"));
    let uuids = |p: &Value| -> Vec<String> {
        p["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(uuids(&p1), vec![u1.clone()]);
    // Unacknowledged, u1 is carried again: the two packets overlap.
    assert_eq!(uuids(&p2), vec![u1.clone(), u2.clone()]);

    b.apply(&p1);
    b.apply(&p2);
    assert_eq!(b.acked, 2);
    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert!(ex.changes().is_empty(), "{:?}", ex.changes());
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
    assert_eq!(b.entities.len(), 2);
}

#[test]
fn export_respects_max_changes_and_reports_more() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    app.register("B");
    let changes: Vec<Value> = (0..3)
        .map(|i| upsert("Note", &new_uuid(), 0, json!({"i": i})))
        .collect();
    assert_eq!(a.sync(&app, changes).status, 200);
    let out = tempfile::tempdir().unwrap();
    let r = cli_json(
        &app,
        &[
            "export",
            "--node",
            "B",
            "--out",
            dir_str(out.path()),
            "--max-changes",
            "2",
        ],
    );
    assert_eq!(r["changes"], 2, "{r}");
    assert_eq!(r["more"], true, "{r}");
    let p = read_packet(&out.path().join("server-to-B-00000001.syncpkt"));
    assert_eq!(p["more"], true);
    assert_eq!(p["changes"].as_array().unwrap().len(), 2);
    cli_err(
        &app,
        &[
            "export",
            "--node",
            "B",
            "--out",
            dir_str(out.path()),
            "--max-changes",
            "0",
        ],
    );
}

#[test]
fn a_full_offline_round_trip_through_files() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let b = app.register("B");
    let u = new_uuid();
    let to_server = tempfile::tempdir().unwrap();
    let to_b = tempfile::tempdir().unwrap();

    // A → server by file.
    write_packet(
        to_server.path(),
        &a,
        &a.packet(1, 0, vec![upsert("Note", &u, 0, json!({"from": "A"}))]),
    );
    cli_ok(&app, &["import", dir_str(to_server.path())]);

    // Server → B by file.
    cli_ok(
        &app,
        &["export", "--node", "B", "--out", dir_str(to_b.path())],
    );
    let p = read_packet(&to_b.path().join("server-to-B-00000001.syncpkt"));
    let changes = p["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["data"], json!({"from": "A"}));
    assert_eq!(changes[0]["operation"], "INSERT");

    // B → server by file: an edit, acknowledging the exported packet.
    write_packet(
        to_server.path(),
        &b,
        &b.packet(1, 1, vec![upsert("Note", &u, 1, json!({"from": "B"}))]),
    );
    let report = cli_json(&app, &["import", dir_str(to_server.path())]);
    assert_eq!(report["applied"], 1, "{report}");
    assert_eq!(report["duplicates"], 1, "{report}");
    assert_eq!(report["conflicts"], 0, "{report}");
    let st = app.node_status(&b);
    assert_eq!(st["acked_packet_no"], 1);
    assert_eq!(st["received_packet_no"], 1);
    assert_eq!(st["pending_changes"], 0);
    assert_eq!(entity(&app, "Note", &u)["data"], json!({"from": "B"}));

    // Server → A by file: B's version; B's next export carries nothing (no echo).
    let to_a = tempfile::tempdir().unwrap();
    cli_ok(
        &app,
        &["export", "--node", "A", "--out", dir_str(to_a.path())],
    );
    let pa = read_packet(&to_a.path().join("server-to-A-00000001.syncpkt"));
    assert_eq!(pa["ack_packet_no"], 1);
    assert_eq!(pa["changes"][0]["data"], json!({"from": "B"}));
    assert_eq!(pa["changes"][0]["version"], 2);
    cli_ok(
        &app,
        &["export", "--node", "B", "--out", dir_str(to_b.path())],
    );
    let pb = read_packet(&to_b.path().join("server-to-B-00000002.syncpkt"));
    assert_eq!(pb["ack_packet_no"], 1);
    assert!(pb["changes"].as_array().unwrap().is_empty(), "{pb}");
}

// ---------------------------------------------------------------- admin commands

#[test]
fn nodes_commands_change_what_http_sees() {
    let app = TestApp::spawn();
    let r = cli_json(
        &app,
        &[
            "nodes",
            "register",
            "C-1",
            "--name",
            "Desk C",
            "--description",
            "front desk",
        ],
    );
    let id = r["node_id"].as_str().expect("node_id").to_string();
    let token = r["auth_token"].as_str().expect("auth_token").to_string();
    assert_eq!(r["server_node_id"], app.server_id.as_str());
    let mut c = node_from(&app, "C-1", &id, &token);
    assert_eq!(
        c.sync(&app, vec![]).status,
        200,
        "the CLI-issued token works"
    );

    let (s, body) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(s, 200);
    let listed = &body["nodes"][0];
    assert_eq!(listed["code"], "C-1");
    assert_eq!(listed["name"], "Desk C");
    assert_eq!(listed["description"], "front desk");

    let list = cli_json(&app, &["nodes", "list"]);
    let nodes = list["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["node_id"], id.as_str());
    assert_eq!(nodes[0]["active"], true);
    assert!(nodes[0].get("auth_token").is_none() && nodes[0].get("token_hash").is_none());
    assert!(cli_ok(&app, &["nodes", "list"]).contains("C-1"));

    // A taken code fails.
    let err = cli_err(&app, &["nodes", "register", "C-1"]);
    assert!(err.contains("C-1"), "{err}");

    // Disable: HTTP 401 at once; enable: works again.
    let d = cli_json(&app, &["nodes", "disable", "C-1"]);
    assert_eq!(d["active"], false);
    let ex = c.sync(&app, vec![]);
    assert_eq!(ex.status, 401, "{}", ex.body);
    let (_, body) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(body["nodes"][0]["active"], false);
    assert!(cli_ok(&app, &["nodes", "enable", &id]).contains("enabled"));
    assert_eq!(c.sync(&app, vec![]).status, 200);

    // Rotate: the old token stops working, the new one works.
    let r = cli_json(&app, &["nodes", "rotate-token", "C-1"]);
    assert_eq!(r["node_id"], id.as_str());
    let new_token = r["auth_token"].as_str().unwrap().to_string();
    assert_ne!(new_token, token);
    assert_eq!(c.sync(&app, vec![]).status, 401);
    c.token = new_token;
    assert_eq!(c.sync(&app, vec![]).status, 200);

    // A node registered over HTTP is listed by the CLI too.
    app.register("D");
    let list = cli_json(&app, &["nodes", "list"]);
    assert_eq!(list["nodes"].as_array().unwrap().len(), 2);
}

#[test]
fn status_commands_match_http() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let b = app.register("B");
    let changes: Vec<Value> = (0..3)
        .map(|i| upsert("Note", &new_uuid(), 0, json!({"i": i})))
        .collect();
    assert_eq!(a.sync(&app, changes).status, 200);

    let s = cli_json(&app, &["status", "B"]);
    let http = app.node_status(&b);
    for f in [
        "node_id",
        "node_code",
        "active",
        "pending_changes",
        "sent_packet_no",
        "received_packet_no",
        "acked_packet_no",
        "unresolved_conflicts",
    ] {
        assert_eq!(s[f], http[f], "{f}: cli {s} vs http {http}");
    }
    assert_eq!(s["pending_changes"], 3);
    let by_id = cli_json(&app, &["status", &b.id]);
    assert_eq!(by_id["node_code"], "B");
    let text = cli_ok(&app, &["status", "B"]);
    assert!(
        text.contains("pending changes") && text.contains('3'),
        "{text}"
    );

    let hub = cli_json(&app, &["status"]);
    assert_eq!(hub["total_nodes"], 2);
    assert_eq!(hub["entities"], 3);
    assert_eq!(hub["server_node_id"], app.server_id.as_str());
    assert_eq!(hub["pending_counts"][&b.id]["pending_changes"], 3);
    assert_eq!(hub["pending_counts"][&a.id]["pending_changes"], 0);
    assert!(cli_ok(&app, &["status"]).contains(&app.server_id));
}

#[test]
fn conflicts_commands_list_and_resolve() {
    let app = TestApp::spawn_with("[conflicts.types.Ticket]\nstrategy = \"manual\"\n", &[]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    assert_eq!(
        a.sync(&app, vec![upsert("Ticket", &u, 0, json!({"v": 0}))])
            .status,
        200
    );
    b.drain(&app);
    assert_eq!(
        a.sync(&app, vec![upsert("Ticket", &u, 1, json!({"v": "a"}))])
            .status,
        200
    );
    let ex = b.sync(&app, vec![upsert("Ticket", &u, 1, json!({"v": "b"}))]);
    assert_eq!(ex.body["conflict_count"], 1, "{}", ex.body);
    let id = ex.body["conflicts"][0]["conflict_id"]
        .as_str()
        .unwrap()
        .to_string();
    b.drain(&app);

    let list = cli_json(&app, &["conflicts", "list", "--unresolved"]);
    let rows = list["conflicts"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["conflict_resolution"], "manual:pending");
    assert_eq!(rows[0]["serialized_data"], json!({"v": "b"}));
    let by_node = cli_json(
        &app,
        &[
            "conflicts",
            "list",
            "--node",
            "B",
            "--entity-type",
            "Ticket",
        ],
    );
    assert_eq!(by_node["conflicts"].as_array().unwrap().len(), 1);
    let none = cli_json(&app, &["conflicts", "list", "--node", "A"]);
    assert!(none["conflicts"].as_array().unwrap().is_empty());
    assert!(cli_ok(&app, &["conflicts", "list"]).contains(&id));

    let view = cli_json(
        &app,
        &["conflicts", "resolve", &id, "--data", r#"{"v":"cli"}"#],
    );
    assert_eq!(view["version"], 3, "{view}");
    assert_eq!(view["data"], json!({"v": "cli"}));
    assert_eq!(entity(&app, "Ticket", &u)["data"], json!({"v": "cli"}));
    let row = &app.conflicts("")[0];
    assert_eq!(row["resolved_by"], "admin");
    assert_eq!(row["conflict_resolution"], "manual:admin");
    assert!(app.conflicts("?unresolved=true").is_empty());
    for n in [&mut a, &mut b] {
        let got: Vec<_> = n
            .drain(&app)
            .into_iter()
            .filter(|c| c["entity_uuid"] == json!(u))
            .collect();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["data"], json!({"v": "cli"}));
    }

    let err = cli_err(&app, &["conflicts", "resolve", &id, "--use", "history"]);
    assert!(err.contains("already resolved"), "{err}");
    cli_err(
        &app,
        &["conflicts", "resolve", &new_uuid(), "--use", "server"],
    );
    cli_err(&app, &["conflicts", "resolve", &id, "--data", "not json"]);
    assert_eq!(entity(&app, "Ticket", &u)["version"], 3);
}

#[test]
fn cli_errors_exit_non_zero_with_a_message() {
    let app = TestApp::spawn();
    let out = tempfile::tempdir().unwrap();
    for args in [
        vec!["export", "--node", "NOPE", "--out", dir_str(out.path())],
        vec!["status", "NOPE"],
        vec!["nodes", "disable", "NOPE"],
        vec!["nodes", "enable", "NOPE"],
        vec!["nodes", "rotate-token", "NOPE"],
        vec!["conflicts", "list", "--node", "NOPE"],
    ] {
        let err = cli_err(&app, &args);
        assert!(err.contains("NOPE"), "{args:?}: {err}");
    }
    assert!(
        syncpkt_files(out.path()).is_empty(),
        "no file for an unknown node"
    );
    let err = cli_err(&app, &["nodes", "register", "bad code!"]);
    assert!(err.contains("code"), "{err}");
    // Usage errors (clap) exit non-zero too.
    assert!(!app.cli(&["export"]).status.success());
    assert!(!app.cli(&["frobnicate"]).status.success());
}
