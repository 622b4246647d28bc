//! A configuration mistake stops `starsync` with a message naming the file, the dotted key and
//! what is allowed, and the exit status of a configuration error (78, sysexits' EX_CONFIG), so a
//! supervisor can tell "fix the settings" from "try again".
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const EX_CONFIG: i32 = 78;

/// Runs `starsync <args>` in `dir` with the configuration file `toml` (STARSYNC_CONFIG).
fn run(dir: &Path, toml: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
    let file = dir.join("starsync.toml");
    std::fs::write(&file, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starsync"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STARSYNC_CONFIG", &file)
        .env("STARSYNC_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd.output().unwrap(), file.display().to_string())
}

#[test]
fn a_bad_configuration_file_names_the_file_the_key_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key, allowed) in [
        (
            "[conflicts.types.Task]\nstrategy = \"bogus\"\n",
            "conflicts.types.Task.strategy",
            "unknown variant `bogus`, expected one of `server_wins`, `timestamp_wins`, \
             `client_wins`, `manual`",
        ),
        (
            "[server]\nbnid = \"0.0.0.0:8080\"\n",
            "server.bnid",
            "unknown field `bnid`, expected one of `bind`,",
        ),
        (
            "[sync]\nbatch_size = \"lots\"\n",
            "sync.batch_size",
            "invalid type: string \"lots\"",
        ),
        (
            "[conflicts]\ndefault = \"server_wins\"\n[conflicts.types.Task]\nresurect = true\n",
            "conflicts.types.Task.resurect",
            "expected one of `strategy`, `priority_values`, `immutable`, `resurrect`",
        ),
    ] {
        let (out, file) = run(dir.path(), toml, &["serve"], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{toml}: {stderr}");
        let expected = format!("error: configuration file {file}: {key}: ");
        assert!(stderr.starts_with(&expected), "{toml}:\n{stderr}");
        assert!(stderr.contains(allowed), "{toml}:\n{stderr}");
        // Nothing was created: the configuration is read before the database is opened.
        assert!(!dir.path().join("data").exists(), "{toml}");
    }
}

#[test]
fn configuration_errors_exit_78_in_every_output_mode() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "[conflicts.types.Task]\nstrategy = \"bogus\"\n";

    // --json: one JSON document on stdout.
    let (out, file) = run(dir.path(), bad, &["--json", "status"], &[]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    let error = doc["error"].as_str().unwrap();
    assert!(
        error.contains(&file) && error.contains("conflicts.types.Task.strategy"),
        "{error}"
    );

    // JSON logs: the error is a JSON log line too.
    let (out, _) = run(
        dir.path(),
        bad,
        &["serve"],
        &[("STARSYNC_LOG_FORMAT", "json")],
    );
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("conflicts.types.Task.strategy"),
        "{line}"
    );

    // A bad environment variable is a configuration error as well, named.
    let (out, _) = run(
        dir.path(),
        "",
        &["serve"],
        &[("STARSYNC_METRICS_OPEN", "maybe")],
    );
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STARSYNC_METRICS_OPEN"));

    // Not TOML at all: still the file, still 78.
    let (out, file) = run(dir.path(), "[server\n", &["serve"], &[]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&file));

    // A database URL of no known kind is a configuration error too.
    let (out, _) = run(
        dir.path(),
        "",
        &["serve"],
        &[("DATABASE_URL", "mysql://x/y")],
    );
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mysql"));

    // An unreachable database is worth retrying: status 1, not 78.
    let (out, _) = run(
        dir.path(),
        "",
        &["serve"],
        &[("DATABASE_URL", "postgres://starsync:x@127.0.0.1:1/starsync")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");

    // Other failures keep status 1: an admin command where there is no database.
    let (out, _) = run(dir.path(), "", &["status"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no starsync database"), "{stderr}");
}
