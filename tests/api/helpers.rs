//! Black-box test harness: a real server on port 0 with its own temporary database, driven over
//! HTTP. The server owns its temp dir and removes it on drop; no sleeps after spawning (the
//! listener is bound before `spawn` returns).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::{json, Value};
use starsync::config::Settings;
use starsync_protocol::codec;

pub const ADMIN: &str = "test-admin-token-0123456789abcdef";

/// The `starsync-node` program, built by `cargo test` at the workspace root (it belongs to the
/// `starsync-node-cli` crate, so cargo gives this crate no `CARGO_BIN_EXE_` for it; it sits
/// beside the `starsync` binary in the same target directory).
pub fn node_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_starsync"))
        .with_file_name(format!("starsync-node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests from the workspace root with `cargo test` (or build it with \
         `cargo build -p starsync-node-cli`)",
        bin.display()
    );
    bin
}

/// `TEST_LOG=1` (or any value) prints the servers' logs through the test harness's capture, so
/// a failing test shows what its server did; unset, tests run quiet. Installed once per binary.
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG_FILTER")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// The backend switch: set `STARSYNC_TEST_DATABASE_URL` to a PostgreSQL URL (a role allowed
/// to create databases) and every test gets its own PostgreSQL database, cloned from a
/// migrated template; unset, every test gets its own SQLite file.
pub const BACKEND_ENV: &str = "STARSYNC_TEST_DATABASE_URL";

/// A database owned by one test, removed on drop.
pub enum TestDb {
    Sqlite,
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn create() -> TestDb {
        match std::env::var(BACKEND_ENV).ok().filter(|u| !u.is_empty()) {
            None => TestDb::Sqlite,
            Some(admin_url) => {
                let name = format!("starsync_t_{}", uuid::Uuid::new_v4().simple());
                pg::create_from_template(&admin_url, &name);
                let url = pg::url_with_db(&admin_url, &name);
                TestDb::Postgres {
                    admin_url,
                    name,
                    url,
                }
            }
        }
    }

    /// DATABASE_URL for a server or CLI working in `dir`.
    pub fn url(&self, dir: &Path) -> String {
        match self {
            TestDb::Sqlite => dir.join("data/starsync.db").display().to_string(),
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            pg::drop_db(admin_url, name);
        }
    }
}

/// PostgreSQL helpers for tests: a template database migrated once, cloned per test.
pub mod pg {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};

    const TEMPLATE: &str = "starsync_test_template";

    pub fn url_with_db(admin_url: &str, db: &str) -> String {
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let (prefix, _) = base
            .rsplit_once('/')
            .expect("postgres URL has a database part");
        format!("{prefix}/{db}{query}")
    }

    pub fn create_from_template(admin_url: &str, name: &str) {
        let mut c = PgConnection::establish(admin_url).expect("connect to PostgreSQL admin URL");
        // One process at a time builds the template; the others wait here.
        c.batch_execute("SELECT pg_advisory_lock(4242)").unwrap();
        let exists = c
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{TEMPLATE}') \
                 THEN RAISE EXCEPTION 'missing'; END IF; END $$"
            ))
            .is_ok();
        if !exists {
            c.batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
                .unwrap();
            let mut conn = starsync::store::DbConn::Postgres(
                PgConnection::establish(&url_with_db(admin_url, TEMPLATE)).unwrap(),
            );
            starsync::store::run_migrations(&mut conn).expect("migrate template");
            // Disconnect before cloning: PostgreSQL copies only unused templates.
            drop(conn);
        }
        let result = c.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"));
        c.batch_execute("SELECT pg_advisory_unlock(4242)").unwrap();
        result.expect("create test database");
    }

    pub fn drop_db(admin_url: &str, name: &str) {
        if let Ok(mut c) = PgConnection::establish(admin_url) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A running server.
pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub server_id: String,
    /// Holds the data dir (and SQLite file); removed when the app is dropped (unless handed to
    /// a restart).
    pub dir: Option<tempfile::TempDir>,
    /// The test's own database.
    pub db: Option<std::sync::Arc<TestDb>>,
    pub config_toml: String,
    pub env: HashMap<String, String>,
    handle: Option<actix_web::dev::ServerHandle>,
    /// The server's event streams, ended before a graceful stop (as `serve` does on SIGTERM).
    live: Option<std::sync::Arc<starsync::engine::live::LiveHub>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestApp {
    pub fn spawn() -> TestApp {
        Self::spawn_with("", &[])
    }

    /// `config_toml` is written to a file named by STARSYNC_CONFIG; `env` adds variables.
    pub fn spawn_with(config_toml: &str, env: &[(&str, &str)]) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let db = std::sync::Arc::new(TestDb::create());
        Self::spawn_in(dir, db, config_toml.to_string(), env)
    }

    /// Environment a server or CLI process of this app uses.
    pub fn env_map(
        dir: &Path,
        db: &TestDb,
        config_toml: &str,
        extra: &HashMap<String, String>,
    ) -> HashMap<String, String> {
        let mut env = HashMap::new();
        let cfg = dir.join("test-config.toml");
        std::fs::write(&cfg, config_toml).unwrap();
        env.insert("STARSYNC_CONFIG".into(), cfg.display().to_string());
        env.insert(
            "STARSYNC_DATA_DIR".into(),
            dir.join("data").display().to_string(),
        );
        env.insert("DATABASE_URL".into(), db.url(dir));
        env.insert("STARSYNC_BIND".into(), "127.0.0.1:0".into());
        env.insert("STARSYNC_ADMIN_TOKEN".into(), ADMIN.into());
        for (k, v) in extra {
            env.insert(k.clone(), v.clone());
        }
        env
    }

    fn spawn_in(
        dir: tempfile::TempDir,
        db: std::sync::Arc<TestDb>,
        config_toml: String,
        extra: HashMap<String, String>,
    ) -> TestApp {
        init_test_log();
        let env = Self::env_map(dir.path(), &db, &config_toml, &extra);
        let settings =
            Settings::load_from(Path::new("/nonexistent-defaults"), &env).expect("settings");
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let app = starsync::startup::Application::build(settings)
                    .await
                    .expect("server builds");
                tx.send((
                    app.port(),
                    app.handle(),
                    app.engine.server_node_id().to_string(),
                    app.engine.live().clone(),
                ))
                .unwrap();
                app.run_until_stopped().await.unwrap();
            })
        });
        let (port, handle, server_id, live) = rx.recv().expect("server started");
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            port,
            server_id,
            dir: Some(dir),
            db: Some(db),
            config_toml,
            env: extra,
            handle: Some(handle),
            live: Some(live),
            thread: Some(thread),
        }
    }

    /// Stops the server and starts a new one on the same database.
    pub fn restart(mut self) -> TestApp {
        self.stop();
        let dir = self.dir.take().unwrap();
        let db = self.db.take().unwrap();
        Self::spawn_in(dir, db, self.config_toml.clone(), self.env.clone())
    }

    fn stop(&mut self) {
        if let Some(live) = self.live.take() {
            live.end_all();
        }
        if let Some(h) = self.handle.take() {
            futures_executor_block(h.stop(true));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().to_path_buf()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Environment for running the `starsync` CLI against this app's database.
    pub fn cli_env(&self) -> HashMap<String, String> {
        Self::env_map(
            &self.path(),
            self.db.as_ref().unwrap(),
            &self.config_toml,
            &self.env,
        )
    }

    /// Runs the `starsync` binary against this app's database.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_starsync"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.current_dir(self.path());
        for (k, v) in self.cli_env() {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "warn");
        cmd.output().expect("run starsync cli")
    }

    // ---- HTTP helpers: every call returns (status, JSON body) ----

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = ureq::get(&self.url(path));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        into_pair(req.call())
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.post_raw(path, token, body.to_string().as_bytes())
    }

    pub fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let mut req = ureq::post(&self.url(path)).set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        into_pair(req.send_bytes(body))
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = ureq::put(&self.url(path)).set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        into_pair(req.send_bytes(body.to_string().as_bytes()))
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = ureq::delete(&self.url(path));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        into_pair(req.call())
    }

    pub fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req =
            ureq::request("PATCH", &self.url(path)).set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        into_pair(req.send_bytes(body.to_string().as_bytes()))
    }

    /// Registers a node with the admin token.
    pub fn register(&self, code: &str) -> TestNode {
        self.register_with(code, json!({}))
    }

    /// Registers a node with extra request fields (`scopes`, `types`).
    pub fn register_with(&self, code: &str, extra: Value) -> TestNode {
        let mut req = json!({ "code": code });
        for (k, v) in extra.as_object().expect("an object of fields") {
            req[k] = v.clone();
        }
        let (s, body) = self.post("/api/sync/register", Some(ADMIN), &req);
        assert_eq!(s, 201, "register {code}: {body}");
        TestNode {
            id: body["node_id"].as_str().unwrap().to_string(),
            token: body["auth_token"].as_str().unwrap().to_string(),
            code: code.to_string(),
            server_id: self.server_id.clone(),
            next_packet_no: 1,
            acked: 0,
            entities: HashMap::new(),
        }
    }

    pub fn node_status(&self, node: &TestNode) -> Value {
        let (s, body) = self.get(&format!("/api/sync/status/{}", node.id), Some(ADMIN));
        assert_eq!(s, 200, "{body}");
        body
    }

    pub fn conflicts(&self, query: &str) -> Vec<Value> {
        let (s, body) = self.get(&format!("/api/sync/conflicts{query}"), Some(ADMIN));
        assert_eq!(s, 200, "{body}");
        body["conflicts"].as_array().unwrap().clone()
    }

    pub fn entity(&self, entity_type: &str, uuid: &str) -> (u16, Value) {
        self.get(
            &format!("/api/sync/entities/{entity_type}/{uuid}"),
            Some(ADMIN),
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn futures_executor_block<F: std::future::Future>(f: F) -> F::Output {
    actix_web::rt::System::new().block_on(f)
}

fn into_pair(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A simulated node speaking the raw protocol. It applies server packets to `entities`
/// (type/uuid → (version, data or null for deleted)).
pub struct TestNode {
    pub id: String,
    pub token: String,
    pub code: String,
    pub server_id: String,
    pub next_packet_no: u64,
    /// Highest server packet applied (what we acknowledge).
    pub acked: u64,
    pub entities: HashMap<(String, String), (u64, Value)>,
}

/// The outcome of one exchange.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub body: Value,
    /// The decoded server packet (when the exchange succeeded).
    pub packet: Option<Value>,
}

impl Exchange {
    pub fn changes(&self) -> Vec<Value> {
        self.packet
            .as_ref()
            .map(|p| p["changes"].as_array().unwrap().clone())
            .unwrap_or_default()
    }
    pub fn more(&self) -> bool {
        self.packet
            .as_ref()
            .map(|p| p["more"] == json!(true))
            .unwrap_or(false)
    }
}

pub fn now() -> String {
    starsync_protocol::now_ts()
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A node → server change.
pub fn change(op: &str, entity_type: &str, uuid: &str, base: u64, data: Value) -> Value {
    json!({
        "change_id": new_uuid(),
        "entity_type": entity_type,
        "entity_uuid": uuid,
        "operation": op,
        "base_version": base,
        "version": null,
        "updated_at": now(),
        "data": data,
    })
}

pub fn upsert(entity_type: &str, uuid: &str, base: u64, data: Value) -> Value {
    change(
        if base == 0 { "INSERT" } else { "UPDATE" },
        entity_type,
        uuid,
        base,
        data,
    )
}

pub fn delete(entity_type: &str, uuid: &str, base: u64) -> Value {
    change("DELETE", entity_type, uuid, base, Value::Null)
}

/// Gzips and hex-encodes a packet JSON value.
pub fn encode(packet: &Value) -> String {
    hex::encode(codec::gzip_bytes(packet.to_string().as_bytes()))
}

/// Decodes a hex packet from a response.
pub fn decode(hex_text: &str) -> Value {
    let bytes = hex::decode(hex_text).unwrap();
    let json = codec::inflate_limited(&bytes, 1 << 30).unwrap();
    serde_json::from_slice(&json).unwrap()
}

impl TestNode {
    /// A packet from this node with explicit numbers.
    pub fn packet(&self, packet_no: u64, ack: u64, changes: Vec<Value>) -> Value {
        json!({
            "format": 1,
            "schema_version": "1.0.0",
            "sender_node_id": self.id,
            "receiver_node_id": self.server_id,
            "packet_no": packet_no,
            "ack_packet_no": ack,
            "created_at": now(),
            "more": false,
            "changes": changes,
        })
    }

    /// Posts a packet value as-is (no bookkeeping).
    pub fn post_packet(&self, app: &TestApp, packet: &Value) -> Exchange {
        let (status, body) = app.post(
            "/api/sync/exchange",
            Some(&self.token),
            &json!({"packet_data": encode(packet)}),
        );
        let packet = if status == 200 {
            Some(decode(body["packet_data"].as_str().unwrap()))
        } else {
            None
        };
        Exchange {
            status,
            body,
            packet,
        }
    }

    /// One well-behaved exchange: next packet number, acknowledging what we applied; applies
    /// the answer (server packets newer than the last applied).
    pub fn sync(&mut self, app: &TestApp, changes: Vec<Value>) -> Exchange {
        let p = self.packet(self.next_packet_no, self.acked, changes);
        let ex = self.post_packet(app, &p);
        if ex.status == 200 {
            self.next_packet_no += 1;
            self.apply(ex.packet.as_ref().unwrap());
        }
        ex
    }

    /// Applies a server packet to the simulated local store.
    pub fn apply(&mut self, packet: &Value) {
        let no = packet["packet_no"].as_u64().unwrap();
        if no <= self.acked {
            return;
        }
        for c in packet["changes"].as_array().unwrap() {
            let key = (
                c["entity_type"].as_str().unwrap().to_string(),
                c["entity_uuid"].as_str().unwrap().to_string(),
            );
            // A DELETE that says an entity left the node's scopes carries no version.
            let v = c["version"].as_u64().unwrap_or(0);
            let data = if c["operation"] == "DELETE" {
                Value::Null
            } else {
                c["data"].clone()
            };
            self.entities.insert(key, (v, data));
        }
        self.acked = no;
    }

    /// Exchanges empty packets until the server has nothing more.
    pub fn drain(&mut self, app: &TestApp) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let ex = self.sync(app, vec![]);
            assert_eq!(ex.status, 200, "{}", ex.body);
            all.extend(ex.changes());
            if !ex.more() {
                // One more empty exchange acknowledges the last packet.
                return all;
            }
        }
    }

    /// The version this node last saw for an entity (0 when unknown).
    pub fn version_of(&self, t: &str, u: &str) -> u64 {
        self.entities
            .get(&(t.to_string(), u.to_string()))
            .map(|e| e.0)
            .unwrap_or(0)
    }
}

// ---- Several server processes on one database ----

/// How to start `starsync serve` processes on a [`TestApp`]'s database and data dir. Taken once
/// from the app: it stays valid across the app's restarts (same dir, same database).
#[derive(Clone)]
pub struct ProcessSpec {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl ProcessSpec {
    pub fn of(app: &TestApp) -> ProcessSpec {
        ProcessSpec {
            dir: app.path(),
            env: app.cli_env(),
        }
    }
}

/// A `starsync serve` process on the same database and data dir as a [`TestApp`]; killed on
/// drop. The port is read from its start-up log line (it binds port 0).
pub struct ServerProcess {
    pub base: String,
    child: std::process::Child,
    /// Log lines after start-up, when asked for ([`ServerProcess::spawn_logged`]).
    pub log: Option<mpsc::Receiver<String>>,
}

impl ServerProcess {
    pub fn spawn(app: &TestApp) -> ServerProcess {
        Self::start(&ProcessSpec::of(app), "info", false)
    }

    pub fn spawn_spec(spec: &ProcessSpec) -> ServerProcess {
        Self::start(spec, "info", false)
    }

    /// Like [`ServerProcess::spawn`] with `RUST_LOG=filter`, handing every later log line to
    /// [`ServerProcess::log`] (so a test can wait for what the server says it does).
    pub fn spawn_logged(app: &TestApp, filter: &str) -> ServerProcess {
        Self::start(&ProcessSpec::of(app), filter, true)
    }

    pub fn spawn_spec_logged(spec: &ProcessSpec, filter: &str) -> ServerProcess {
        Self::start(spec, filter, true)
    }

    fn start(spec: &ProcessSpec, filter: &str, keep_log: bool) -> ServerProcess {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_starsync"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&spec.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        // After the spec: the start-up line below is at info level.
        cmd.env("RUST_LOG", format!("info,{filter}"));
        let mut child = cmd.spawn().expect("spawn starsync serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.expect("read server log");
            if let Some(pos) = line.find("listening on http://") {
                let rest = &line[pos + "listening on ".len()..];
                base = Some(rest.split_whitespace().next().unwrap().to_string());
                break;
            }
        }
        let base = base.expect("server process printed its address");
        // Keep draining the log so the pipe never fills.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if keep_log {
                    let _ = tx.send(line);
                }
            }
        });
        ServerProcess {
            base,
            child,
            log: keep_log.then_some(rx),
        }
    }

    /// `kill -9`: the process dies wherever it is (mid-transaction, mid-answer), without any
    /// chance to clean up.
    pub fn kill9(&mut self) {
        // `Child::kill` sends SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the log has a line containing all of `needles`; panics after `limit`.
    pub fn wait_for_log(&self, needles: &[&str], limit: std::time::Duration) -> String {
        let log = self.log.as_ref().expect("spawned with spawn_logged");
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(_) => panic!("server at {} never logged {needles:?}", self.base),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// POSTs JSON to any server base URL: (status, body).
pub fn post_to(base: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = ureq::post(&format!("{base}{path}")).set("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    into_pair(req.send_bytes(body.to_string().as_bytes()))
}

impl TestNode {
    /// Like [`TestNode::sync`], against the server at `base` (any process of the cluster), and
    /// modelling a real node more closely: the node's own accepted writes are applied to its
    /// local store (keeping the server version it knew, since the server never echoes them).
    pub fn sync_at(&mut self, base: &str, changes: Vec<Value>) -> Exchange {
        let local: Vec<Value> = changes.clone();
        let p = self.packet(self.next_packet_no, self.acked, changes);
        let (status, body) = post_to(
            base,
            "/api/sync/exchange",
            Some(&self.token),
            &json!({"packet_data": encode(&p)}),
        );
        let packet = if status == 200 {
            Some(decode(body["packet_data"].as_str().unwrap()))
        } else {
            None
        };
        let ex = Exchange {
            status,
            body,
            packet,
        };
        if ex.status == 200 {
            let own_taken = ex.body["duplicate"] == true;
            self.take_answer(&local, &ex.body, ex.packet.as_ref().unwrap(), own_taken);
        }
        ex
    }
}

impl TestNode {
    /// Takes a 200 answer to the packet carrying `sent` (this node's changes): the next packet
    /// number, the node's own accepted writes into its local store (keeping the server version
    /// it knew, since the server never echoes them) unless `own_taken` (an earlier answer to
    /// the same packet was taken), then the server packet.
    pub fn take_answer(&mut self, sent: &[Value], body: &Value, packet: &Value, own_taken: bool) {
        self.next_packet_no += 1;
        if !own_taken {
            let rejected: Vec<&Value> = body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| &e["change_id"])
                .collect();
            for c in sent.iter().filter(|c| !rejected.contains(&&c["change_id"])) {
                let key = (
                    c["entity_type"].as_str().unwrap().to_string(),
                    c["entity_uuid"].as_str().unwrap().to_string(),
                );
                let known = self.entities.get(&key).map(|e| e.0).unwrap_or(0);
                let data = if c["operation"] == "DELETE" {
                    Value::Null
                } else {
                    c["data"].clone()
                };
                self.entities.insert(key, (known, data));
            }
        }
        self.apply(packet);
    }
}
