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

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// `STARSYNC_TEST_EXPECT_BACKEND` (`sqlite` or `postgres`, set by `.ci/run` for each pass)
/// makes the suite prove which backend it really ran on: a node registered through the test
/// server must be in that backend's database, read directly.
#[test]
fn the_suite_runs_on_the_backend_asked_for() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    #[derive(diesel::QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let app = crate::helpers::TestApp::spawn();
    app.register("BACKEND-PROBE");
    let url = app.cli_env()["DATABASE_URL"].clone();
    let count = "SELECT COUNT(*) AS n FROM sync_nodes WHERE code = 'BACKEND-PROBE'";
    let (backend, n, version) = if url.starts_with("postgres") {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        c.batch_execute("SELECT 1").unwrap();
        let n = diesel::sql_query(count).get_result::<N>(&mut c).unwrap().n;
        let v = diesel::sql_query("SELECT version() AS v")
            .get_result::<V>(&mut c)
            .unwrap()
            .v;
        ("postgres", n, v)
    } else {
        let mut c = diesel::SqliteConnection::establish(&url).unwrap();
        let n = diesel::sql_query(count).get_result::<N>(&mut c).unwrap().n;
        let v = diesel::sql_query("SELECT 'SQLite ' || sqlite_version() AS v")
            .get_result::<V>(&mut c)
            .unwrap()
            .v;
        ("sqlite", n, v)
    };
    println!("test backend: {backend} ({version})");
    assert_eq!(n, 1, "the node registered through the server is in {url}");
    assert!(
        version.starts_with(if backend == "postgres" {
            "PostgreSQL"
        } else {
            "SQLite"
        }),
        "{version}"
    );
    match std::env::var("STARSYNC_TEST_EXPECT_BACKEND") {
        Ok(expected) => assert_eq!(
            backend, expected,
            "STARSYNC_TEST_EXPECT_BACKEND={expected}, but the tests ran on {backend} \
             (STARSYNC_TEST_DATABASE_URL selects PostgreSQL)"
        ),
        Err(_) => println!("(STARSYNC_TEST_EXPECT_BACKEND unset: nothing to compare)"),
    }
}

/// An empty PostgreSQL database (not cloned from the migrated template), dropped at the end.
struct FreshPg {
    admin: String,
    name: String,
    url: String,
}

impl FreshPg {
    fn create(admin: &str) -> FreshPg {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let name = format!("starsync_fresh_{}", uuid::Uuid::new_v4().simple());
        let mut c = diesel::PgConnection::establish(admin).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap();
        FreshPg {
            admin: admin.to_string(),
            url: crate::helpers::pg::url_with_db(admin, &name),
            name,
        }
    }

    /// Tables of the public schema, and the diesel migrations recorded.
    fn schema(&self) -> (Vec<String>, i64) {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct T {
            #[diesel(sql_type = diesel::sql_types::Text)]
            t: String,
        }
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = diesel::PgConnection::establish(&self.url).unwrap();
        let tables: Vec<String> = diesel::sql_query(
            "SELECT table_name::text AS t FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .load::<T>(&mut c)
        .unwrap()
        .into_iter()
        .map(|r| r.t)
        .collect();
        let n = if tables.iter().any(|t| t == "__diesel_schema_migrations") {
            diesel::sql_query("SELECT COUNT(*) AS n FROM __diesel_schema_migrations")
                .get_result::<N>(&mut c)
                .unwrap()
                .n
        } else {
            0
        };
        (tables, n)
    }
}

impl Drop for FreshPg {
    fn drop(&mut self) {
        crate::helpers::pg::drop_db(&self.admin, &self.name);
    }
}

/// The password of a `postgres://user:password@host/db` URL.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.rsplit_once('@')?.0;
    Some(format!(":{}@", userinfo.split_once(':')?.1))
}

/// The PostgreSQL migrations in the source tree (each a folder).
fn postgres_migrations() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count() as i64
}

/// Runs `starsync serve` on `url` in `dir`; returns (child, base URL).
fn serve_on(dir: &std::path::Path, url: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starsync"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STARSYNC_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", url)
        .env("STARSYNC_ADMIN_TOKEN", crate::helpers::ADMIN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let base = lines.by_ref().map_while(Result::ok).find_map(|line| {
        let b = line.find("listening on http://").map(|p| {
            line[p + 13..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        });
        log.push(line);
        b
    });
    std::thread::spawn(move || for _ in lines {});
    let base = base.unwrap_or_else(|| panic!("server did not start: {}", log.join("\n")));
    (child, base)
}

/// Registers a node and exchanges one change through a server: the schema works.
fn works(base: &str, code: &str) {
    let (s, reg) = crate::helpers::post_to(
        base,
        "/api/sync/register",
        Some(crate::helpers::ADMIN),
        &serde_json::json!({"code": code}),
    );
    assert_eq!(s, 201, "{reg}");
    let status: serde_json::Value = ureq::get(&format!("{base}/api/sync/status"))
        .set(
            "Authorization",
            &format!("Bearer {}", crate::helpers::ADMIN),
        )
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let node = crate::helpers::TestNode {
        id: reg["node_id"].as_str().unwrap().to_string(),
        token: reg["auth_token"].as_str().unwrap().to_string(),
        code: code.to_string(),
        server_id: status["server_node_id"].as_str().unwrap().to_string(),
        next_packet_no: 1,
        acked: 0,
        entities: Default::default(),
    };
    let u = crate::helpers::new_uuid();
    let mut node = node;
    let ex = node.sync_at(
        base,
        vec![crate::helpers::upsert(
            "Doc",
            &u,
            0,
            serde_json::json!({"by": code}),
        )],
    );
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
}

/// Migrations on PostgreSQL from nothing: `starsync migrate` on a fresh, empty database (twice:
/// the second run changes nothing), and `starsync serve` migrating at start — two processes
/// starting at once on another fresh database, serialized by the migration lock. The rest of
/// the suite uses databases cloned from a template migrated in-process, so only this test runs
/// the shipped commands' migrations on PostgreSQL. Skipped (saying so) without a PostgreSQL
/// `STARSYNC_TEST_DATABASE_URL`.
#[test]
fn migrations_run_on_a_fresh_postgres_database() {
    let Some(admin) = std::env::var(crate::helpers::BACKEND_ENV)
        .ok()
        .filter(|u| u.starts_with("postgres"))
    else {
        println!("skipped: STARSYNC_TEST_DATABASE_URL names no PostgreSQL server");
        return;
    };
    let expected = postgres_migrations();
    let dir = tempfile::tempdir().unwrap();

    // `starsync migrate`, twice.
    let db = FreshPg::create(&admin);
    assert_eq!(db.schema(), (vec![], 0), "a fresh database is empty");
    for _ in 0..2 {
        let out = starsync(dir.path(), &["migrate"], &[("DATABASE_URL", &db.url)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("migrations applied"), "{said}");
        if let Some(password) = password_of(&db.url) {
            assert!(
                !said.contains(&password),
                "the password is redacted: {said}"
            );
        }
        let (tables, applied) = db.schema();
        assert_eq!(applied, expected, "every migration recorded once");
        for t in [
            "entities",
            "sync_nodes",
            "server_state",
            "object_version_history",
        ] {
            assert!(tables.iter().any(|x| x == t), "{t} missing: {tables:?}");
        }
    }
    let (mut child, base) = serve_on(dir.path(), &db.url);
    works(&base, "MIGRATED");
    child.kill().unwrap();
    child.wait().unwrap();

    // `starsync serve` on a fresh database migrates at start; two at once.
    let db2 = FreshPg::create(&admin);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = std::thread::scope(|s| {
        let ta = s.spawn(|| serve_on(d1.path(), &db2.url));
        let tb = s.spawn(|| serve_on(d2.path(), &db2.url));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(db2.schema().1, expected, "every migration recorded once");
    works(&a.1, "FIRST");
    works(&b.1, "SECOND");
    for (mut child, _) in [a, b] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn admin_commands_never_create_a_database_and_say_which_one_they_opened() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["nodes", "list"],
        &["nodes", "register", "D1"],
        &["conflicts", "list"],
        &["export", "--node", "D1", "--out", "out"],
    ] {
        let out = starsync(dir.path(), args, &[]);
        assert!(!out.status.success(), "{args:?} succeeded on no database");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no starsync database at") && err.contains("data/starsync.db"),
            "{args:?}: {err}"
        );
        assert!(
            !dir.path().join("data").exists(),
            "{args:?} created a database"
        );
    }
    // The same error as one JSON document with --json.
    let out = starsync(dir.path(), &["--json", "status"], &[]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("no starsync database at"));
    // Where a database exists, the command names it and works.
    assert!(starsync(dir.path(), &["migrate"], &[]).status.success());
    let out = starsync(dir.path(), &["--json", "status"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database: data/starsync.db"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_nodes"], 0);
}

#[test]
fn the_sqlite_database_and_its_wal_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    assert!(starsync(dir.path(), &["migrate"], &[]).status.success());
    // An admin command opens it again (WAL mode leaves -wal and -shm beside it while open).
    let out = starsync(dir.path(), &["nodes", "register", "P1"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = dir.path().join("data");
    let mut checked = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("starsync.db") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no database file in {}", data.display());
}

#[test]
fn an_unreachable_postgresql_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let out = starsync(
        dir.path(),
        &["migrate"],
        &[(
            "DATABASE_URL",
            "postgres://starsync:secret@127.0.0.1:1/starsync",
        )],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("cannot connect to PostgreSQL at postgres://starsync:***@127.0.0.1:1"),
        "{err}"
    );
    assert!(
        !err.contains("secret"),
        "the password is never printed: {err}"
    );
}

#[test]
fn serve_help_lists_every_environment_variable_the_configuration_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = starsync(dir.path(), &["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let source = include_str!("../../src/config.rs");
    let mut names: Vec<&str> = source
        .match_indices("\"STARSYNC_")
        .map(|(i, _)| {
            let rest = &source[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.push("DATABASE_URL");
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            help.contains(name),
            "`serve --help` does not list {name}:\n{help}"
        );
    }
}

/// Every argument and option of both programs explains itself in `--help`.
#[test]
fn every_cli_argument_has_help_text() {
    let server = env!("CARGO_BIN_EXE_starsync").to_string();
    let node = crate::helpers::node_bin().display().to_string();
    let commands: Vec<(&str, Vec<&str>)> = vec![
        (&server, vec!["serve"]),
        (&server, vec!["migrate"]),
        (&server, vec!["export"]),
        (&server, vec!["import"]),
        (&server, vec!["nodes", "list"]),
        (&server, vec!["nodes", "register"]),
        (&server, vec!["nodes", "disable"]),
        (&server, vec!["nodes", "enable"]),
        (&server, vec!["nodes", "rotate-token"]),
        (&server, vec!["status"]),
        (&server, vec!["conflicts", "list"]),
        (&server, vec!["conflicts", "resolve"]),
        (&node, vec!["init"]),
        (&node, vec!["put"]),
        (&node, vec!["create"]),
        (&node, vec!["delete"]),
        (&node, vec!["get"]),
        (&node, vec!["list"]),
        (&node, vec!["queue"]),
        (&node, vec!["sync"]),
        (&node, vec!["daemon"]),
        (&node, vec!["export"]),
        (&node, vec!["import"]),
        (&node, vec!["status"]),
        (&node, vec!["conflicts"]),
        (&node, vec!["failed", "retry"]),
        (&node, vec!["failed", "drop"]),
        (&node, vec!["config"]),
    ];
    let mut missing = Vec::new();
    for (bin, args) in &commands {
        let out = Command::new(bin)
            .args(args)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin} {args:?} --help");
        let help = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = help.lines().collect();
        let mut in_list = false;
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                in_list = *line == "Arguments:" || *line == "Options:";
                continue;
            }
            let entry = line.trim_start();
            let is_entry = in_list
                && line.starts_with("  ")
                && (entry.starts_with('-') || entry.starts_with('<') || entry.starts_with('['));
            if !is_entry {
                continue;
            }
            let described = entry.split("  ").filter(|p| !p.trim().is_empty()).count() >= 2
                || lines
                    .get(i + 1)
                    .map(|next| {
                        let n = next.trim_start();
                        next.len() - n.len() > line.len() - entry.len()
                            && !n.starts_with('-')
                            && !n.starts_with('<')
                    })
                    .unwrap_or(false);
            if !described {
                missing.push(format!(
                    "{} {}: {entry}",
                    bin.rsplit('/').next().unwrap(),
                    args.join(" ")
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "arguments without help text:\n{}",
        missing.join("\n")
    );
}

#[test]
fn risky_settings_are_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_starsync"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STARSYNC_BIND", "0.0.0.0:0")
        .env("STARSYNC_OPEN_REGISTRATION", "true")
        .env("STARSYNC_METRICS_OPEN", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines {
        let line = line.unwrap();
        let done = line.contains("listening on");
        log.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = log.join("\n");
    assert!(
        log.contains("WARN") && log.contains("plain HTTP on 0.0.0.0:0"),
        "{log}"
    );
    assert!(log.contains("open registration is on"), "{log}");
    assert!(log.contains("GET /metrics is open"), "{log}");

    // The defaults (loopback, closed registration) start without warnings.
    let (mut child, _, log) = serve(dir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!log.join("\n").contains("WARN"), "{log:?}");
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
