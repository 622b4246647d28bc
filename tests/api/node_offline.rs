//! Fully offline round trip with the `starsync-node` and `starsync` CLIs: A exports packet
//! files, the server imports them, the server exports for B, B imports — B equals A without any
//! HTTP exchange (registration is the only HTTP call). Acknowledgments travel the same way.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use serde_json::Value;

fn node_out(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(node_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run starsync-node")
}

fn ok(dir: &Path, args: &[&str]) -> Value {
    let out = node_out(dir, args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "starsync-node {args:?}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap()
}

fn server_cli(app: &TestApp, args: &[&str]) -> String {
    let out = app.cli(args);
    assert!(
        out.status.success(),
        "starsync {args:?}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn entities(dir: &Path, t: &str) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = ok(dir, &["list", t])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["entity_uuid"].as_str().unwrap().to_string(),
                e["data"].clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn offline_round_trip_by_files_only() {
    let app = TestApp::spawn();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (da.path(), db.path());
    for (d, code) in [(a, "A"), (b, "B")] {
        ok(
            d,
            &[
                "init",
                "--server",
                &app.base,
                "--code",
                code,
                "--admin-token",
                ADMIN,
                "--batch-size",
                "4",
            ],
        );
    }

    // A works offline: creates, edits, deletes.
    let mut uuids = Vec::new();
    for i in 0..10 {
        let v = ok(
            a,
            &[
                "create",
                "Estimate",
                &format!(r#"{{"n": {i}, "name": "item {i}"}}"#),
            ],
        );
        uuids.push(v["uuid"].as_str().unwrap().to_string());
    }
    ok(
        a,
        &[
            "put",
            "Estimate",
            &uuids[0],
            r#"{"n": 0, "name": "edited"}"#,
        ],
    );
    ok(a, &["delete", "Estimate", &uuids[1]]);

    // A → files → server.
    let to_server = tempfile::tempdir().unwrap();
    let exported = ok(a, &["export", "--out", to_server.path().to_str().unwrap()]);
    let names = files_in(to_server.path());
    assert_eq!(
        names,
        vec![
            "A-to-server-00000001.syncpkt",
            "A-to-server-00000002.syncpkt",
            "A-to-server-00000003.syncpkt"
        ],
        "10 pending entries in batches of 4: {exported}"
    );
    // Exporting again rewrites the same immutable packets, byte for byte.
    let first = std::fs::read(to_server.path().join(&names[0])).unwrap();
    let again = tempfile::tempdir().unwrap();
    ok(a, &["export", "--out", again.path().to_str().unwrap()]);
    assert_eq!(files_in(again.path()), names);
    assert_eq!(std::fs::read(again.path().join(&names[0])).unwrap(), first);
    server_cli(&app, &["import", to_server.path().to_str().unwrap()]);
    // Importing the same files twice is harmless (duplicates).
    let twice = server_cli(&app, &["import", again.path().to_str().unwrap()]);
    assert!(twice.contains("3 duplicates"), "{twice}");

    // Server → files → B.
    let to_b = tempfile::tempdir().unwrap();
    server_cli(
        &app,
        &[
            "export",
            "--node",
            "B",
            "--out",
            to_b.path().to_str().unwrap(),
            "--max-changes",
            "1000",
        ],
    );
    let imported = ok(b, &["import", to_b.path().to_str().unwrap()]);
    assert_eq!(imported["received"], 9, "{imported}");
    assert_eq!(entities(b, "Estimate"), entities(a, "Estimate"));
    assert_eq!(entities(b, "Estimate").len(), 9);
    // Importing the same file again changes nothing.
    let again = ok(b, &["import", to_b.path().to_str().unwrap()]);
    assert_eq!(again["files"][0]["skipped"], true);

    // No HTTP exchange happened on either node.
    for d in [a, b] {
        let st = ok(d, &["status"])["status"].clone();
        assert_eq!(st["last_attempt_at"], Value::Null, "{st}");
        assert!(st["last_import_at"].is_string() || d == a);
    }

    // Acknowledgments travel by file too: B acknowledges its import, A learns that the server
    // applied its packets; afterwards nothing is pending anywhere.
    let from_b = tempfile::tempdir().unwrap();
    let ack = ok(b, &["export", "--out", from_b.path().to_str().unwrap()]);
    assert_eq!(
        ack["files"][0]["changes"], 0,
        "an empty packet carries the ack: {ack}"
    );
    server_cli(&app, &["import", from_b.path().to_str().unwrap()]);
    let (_, st) = app.get(
        &format!(
            "/api/sync/status/{}",
            ok(b, &["status"])["node"]["node_id"].as_str().unwrap()
        ),
        Some(ADMIN),
    );
    assert_eq!(st["pending_changes"], 0, "{st}");

    let to_a = tempfile::tempdir().unwrap();
    server_cli(
        &app,
        &[
            "export",
            "--node",
            "A",
            "--out",
            to_a.path().to_str().unwrap(),
        ],
    );
    ok(a, &["import", to_a.path().to_str().unwrap()]);
    let st = ok(a, &["status"])["status"].clone();
    assert_eq!(
        (
            st["in_flight"].clone(),
            st["stored_packets"].clone(),
            st["server_acked_packet_no"].clone()
        ),
        (Value::from(0), Value::from(0), Value::from(3)),
        "{st}"
    );
    assert_eq!(entities(a, "Estimate").len(), 9);

    // Files for another node are refused by name (directory) and by address (explicit file).
    let wrong = to_b.path().join(files_in(to_b.path())[0].clone());
    let out = node_out(a, &["import", wrong.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("but this node is"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn big_packet_file_imports_with_progress() {
    let app = TestApp::spawn();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (da.path(), db.path());
    for (d, code) in [(a, "A"), (b, "B")] {
        ok(
            d,
            &[
                "init",
                "--server",
                &app.base,
                "--code",
                code,
                "--admin-token",
                ADMIN,
                "--batch-size",
                "10000",
            ],
        );
    }
    let node = starsync_node::Node::open(a).unwrap();
    for i in 0..6000 {
        node.create("Part", &serde_json::json!({"i": i})).unwrap();
    }
    drop(node);
    let to_server = tempfile::tempdir().unwrap();
    ok(a, &["export", "--out", to_server.path().to_str().unwrap()]);
    server_cli(&app, &["import", to_server.path().to_str().unwrap()]);
    let to_b = tempfile::tempdir().unwrap();
    server_cli(
        &app,
        &[
            "export",
            "--node",
            "B",
            "--out",
            to_b.path().to_str().unwrap(),
            "--max-changes",
            "10000",
        ],
    );
    // Human mode reports progress on stderr.
    let out = Command::new(node_bin())
        .arg("--data-dir")
        .arg(b)
        .args(["import", to_b.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[1/1]"), "{err}");
    assert!(err.contains("5000/6000 changes applied"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("6000 changes applied"));
    assert_eq!(ok(b, &["list", "Part"]).as_array().unwrap().len(), 6000);
}

/// `starsync-node` with `--json`, bounded to 60 seconds; returns (exit code, JSON output).
fn node_within(dir: &Path, args: &[&str]) -> (i32, Value) {
    let mut cmd = Command::new(node_bin());
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let out = crate::cli_offline::output_within(&mut cmd, std::time::Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON ({e}): {text}"));
    (out.status.code().unwrap_or(-1), v)
}

fn init_node(app: &TestApp, dir: &Path, code: &str, batch_size: &str) {
    ok(
        dir,
        &[
            "init",
            "--server",
            &app.base,
            "--code",
            code,
            "--admin-token",
            ADMIN,
            "--batch-size",
            batch_size,
        ],
    );
}

#[test]
fn import_reads_only_regular_files_within_max_packet_bytes() {
    let app = TestApp::spawn();
    let d = tempfile::tempdir().unwrap();
    init_node(&app, d.path(), "A", "100");
    let files = tempfile::tempdir().unwrap();
    let status = || ok(d.path(), &["status"])["status"].clone();
    let before = status();

    // A FIFO named like a server packet: refused at once, with the path.
    let fifo = files.path().join("server-to-A-00000001.syncpkt");
    crate::cli_offline::mkfifo(&fifo);
    let (code, v) = node_within(d.path(), &["import", fifo.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains(fifo.to_str().unwrap()) && e.contains("FIFO"),
        "{v}"
    );

    // A link to /dev/zero named like a packet.
    let zero = files.path().join("x.syncpkt");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let (code, v) = node_within(d.path(), &["import", zero.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("x.syncpkt") && e.contains("character device"),
        "{v}"
    );

    // Over the node's max_packet_bytes: refused with the path, the limit and the setting.
    ok(d.path(), &["config", "max_packet_bytes", "2048"]);
    let big = files.path().join("server-to-A-00000002.syncpkt");
    std::fs::write(&big, vec![0x1fu8; 3000]).unwrap();
    let (code, v) = node_within(d.path(), &["import", big.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    for needle in [
        big.to_str().unwrap(),
        "3000 bytes",
        "2048",
        "max_packet_bytes",
    ] {
        assert!(e.contains(needle), "{needle:?} in {v}");
    }

    // In a directory only regular files count: the FIFO, the link and (once the big file is
    // gone) nothing is left to import.
    std::fs::remove_file(&big).unwrap();
    let (code, v) = node_within(d.path(), &["import", files.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no server packet files"),
        "{v}"
    );
    let after = status();
    assert_eq!(after["received_packet_no"], before["received_packet_no"]);
}

#[test]
fn a_failed_node_export_changes_nothing() {
    let app = TestApp::spawn();
    let d = tempfile::tempdir().unwrap();
    // One change per packet, so one export numbers several packets.
    init_node(&app, d.path(), "A", "1");
    let out = tempfile::tempdir().unwrap();
    let status = || ok(d.path(), &["status"])["status"].clone();

    ok(d.path(), &["create", "Note", r#"{"n": 1}"#]);
    ok(d.path(), &["export", "--out", out.path().to_str().unwrap()]);
    let first = out.path().join("A-to-server-00000001.syncpkt");
    let first_bytes = std::fs::read(&first).unwrap();
    assert_eq!(status()["sent_packet_no"], 1);

    // Two new changes (packets 2 and 3), and a full disk (for root too) where packet 3 goes:
    // packet 2's file is written, then the export fails.
    ok(d.path(), &["create", "Note", r#"{"n": 2}"#]);
    ok(d.path(), &["create", "Note", r#"{"n": 3}"#]);
    let before = status();
    assert_eq!(before["pending"], 2, "{before}");
    let tmp = out.path().join("A-to-server-00000003.syncpkt.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let (code, v) = node_within(d.path(), &["export", "--out", out.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains(
            out.path()
                .join("A-to-server-00000003.syncpkt")
                .to_str()
                .unwrap()
        ) && e.contains("No space left on device"),
        "{v}"
    );
    let after = status();
    for k in ["sent_packet_no", "pending", "in_flight", "stored_packets"] {
        assert_eq!(after[k], before[k], "{k}: {before} -> {after}");
    }
    // Packet 1 (numbered before) is still there, intact; packet 2's file, whose numbering was
    // rolled back, is gone.
    assert_eq!(files_in(out.path()), vec!["A-to-server-00000001.syncpkt"]);
    assert_eq!(std::fs::read(&first).unwrap(), first_bytes);

    // An output directory that cannot exist.
    let (code, v) = node_within(d.path(), &["export", "--out", "/dev/null/out"]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("/dev/null/out"),
        "{v}"
    );
    assert_eq!(status()["sent_packet_no"], 1);

    // Once the disk has room, the export numbers packets 2 and 3 as if nothing had happened.
    let v = ok(d.path(), &["export", "--out", out.path().to_str().unwrap()]);
    assert_eq!(v["files"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(
        files_in(out.path()),
        vec![
            "A-to-server-00000001.syncpkt",
            "A-to-server-00000002.syncpkt",
            "A-to-server-00000003.syncpkt"
        ]
    );
    assert_eq!(status()["sent_packet_no"], 3);
}
