//! `starsync-node` as a script sees it: exit codes and settings that keep local work.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use serde_json::{json, Value};

fn node(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(node_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run starsync-node");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_rotated_token_is_stored_with_config_token_and_unsynced_changes_survive() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, v, _) = node(
        d,
        &[
            "init",
            "--server",
            &app.base,
            "--code",
            "ROT",
            "--admin-token",
            ADMIN,
        ],
    );
    assert_eq!(code, 0, "{v}");
    let node_id = v["node_id"].as_str().unwrap().to_string();
    let (_, created, _) = node(
        d,
        &["create", "Task", r#"{"title": "written before rotation"}"#],
    );
    let uuid = created["uuid"].as_str().unwrap().to_string();

    // The admin rotates the token: the node's next sync is refused (exit 3), and the advice
    // names the command that keeps local work.
    let (s, rotated) = app.post(
        &format!("/api/sync/nodes/{node_id}/token"),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{rotated}");
    let new_token = rotated["auth_token"].as_str().unwrap();
    let (code, v, _) = node(d, &["sync"]);
    assert_eq!(code, 3, "{v}");
    assert!(v["error"].as_str().unwrap().contains("config token"), "{v}");

    let (code, v, _) = node(d, &["config", "token", new_token]);
    assert_eq!(code, 0, "{v}");
    assert!(
        !v.to_string().contains(new_token),
        "settings never show the token: {v}"
    );
    let (code, v, _) = node(d, &["sync"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["sent"], 1, "{v}");
    let (s, e) = app.entity("Task", &uuid);
    assert_eq!(
        (s, e["data"].clone()),
        (200, json!({"title": "written before rotation"}))
    );
    let (code, v, _) = node(d, &["config", "token", ""]);
    assert_eq!(code, 1, "{v}");
}
