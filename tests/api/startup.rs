//! Starting the server as a user would (PROTOCOL §9): no admin token configured, so one is
//! generated on first start, stored readable only by its owner, named (never printed) in the
//! log, and reused on the next start.

use std::io::BufRead;
use std::process::{Command, Stdio};

/// Runs `starsync serve` in `dir` without STARSYNC_ADMIN_TOKEN; returns (child, base URL, the
/// log lines up to "listening").
fn serve(dir: &std::path::Path) -> (std::process::Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starsync"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STARSYNC_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut base = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.find("listening on http://") {
            base = Some(
                line[p + 13..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string(),
            );
            seen.push(line);
            break;
        }
        seen.push(line);
    }
    std::thread::spawn(move || for _ in lines {});
    (child, base.expect("server started"), seen)
}

fn status_with(base: &str, token: &str) -> u16 {
    match ureq::get(&format!("{base}/api/sync/status"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn first_start_generates_a_private_admin_token_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base, log) = serve(dir.path());
    let file = dir.path().join("data/admin_token");
    let token = std::fs::read_to_string(&file).expect("admin token file created under data/");
    let token = token.trim().to_string();
    assert!(token.len() >= 64, "at least 256 random bits in hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable only by its owner");
    }
    assert!(
        dir.path().join("data/starsync.db").exists(),
        "SQLite default under data/"
    );
    let log = log.join("\n");
    assert!(
        log.contains("data/admin_token"),
        "the log says where the token is: {log}"
    );
    assert!(
        !log.contains(&token),
        "the token itself never reaches the log"
    );
    assert_eq!(status_with(&base, &token), 200);
    assert_eq!(status_with(&base, "not-the-token"), 401);
    child.kill().unwrap();
    child.wait().unwrap();

    // The next start reuses the stored token.
    let (mut child, base, log) = serve(dir.path());
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert!(log.join("\n").contains("existing"));
    assert_eq!(status_with(&base, &token), 200);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn starsync(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starsync"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn migrate_runs_the_migrations_alone_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = starsync(dir.path(), &["migrate"], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    assert!(dir.path().join("data/starsync.db").exists());
    // The migrated database serves at once: the CLI can register a node on it.
    let out = starsync(dir.path(), &["--json", "nodes", "register", "D1"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["auth_token"].as_str().unwrap().len() >= 64);
}

#[test]
fn an_unknown_database_scheme_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = starsync(
        dir.path(),
        &["migrate"],
        &[("DATABASE_URL", "mysql://u@h/db")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mysql") && err.contains("postgres://"),
        "{err}"
    );
}

/// `starsync serve` that must refuse to start: its stderr (killed after 30 s if it served).
fn serve_refused(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starsync"));
    cmd.arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STARSYNC_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for token in ["x", "0123456789abcdef0123456789abcde"] {
        let err = serve_refused(dir.path(), &[("STARSYNC_ADMIN_TOKEN", token)]);
        assert!(
            err.contains("STARSYNC_ADMIN_TOKEN") && err.contains("at least 32"),
            "{err}"
        );
    }
    // A token file edited down to a short token is refused the same way, naming the file.
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/admin_token"), "short\n").unwrap();
    let err = serve_refused(dir.path(), &[]);
    assert!(
        err.contains("admin_token") && err.contains("at least 32"),
        "{err}"
    );
}
