//! The starsync benchmark runner: a release `starsync serve` process, real HTTP on loopback.
//!
//! ```text
//! cargo bench --bench sync                          # SQLite, full scale
//! cargo bench --bench sync -- --quick               # 10x smaller, for a quick look
//! cargo bench --bench sync -- --postgres URL        # PostgreSQL (URL of a role that may CREATE DATABASE)
//! cargo bench --bench sync -- --json out.json       # where the JSON goes (default target/bench/sync-<backend>.json)
//! cargo bench --bench sync -- --only abuse-memory   # 50 max-size requests + 50 max-size answers at once
//! cargo bench --bench sync -- --only abuse          # 10,000 slow connections (--slow N for another count)
//! cargo bench --bench sync -- --only watermelon     # WatermelonDB: first pull of 100,000 records, a 5,000-record push
//! cargo bench --bench sync -- --only scopes         # 1,000 tenants x 2 nodes, 100,000 entities (also in --quick, 10x smaller)
//! cargo bench --bench sync -- --only live           # event streams: propagation, 1,000 streams, 2 processes
//! cargo bench --bench sync -- --only peer           # the peer comparison's four phases, node library in-process
//! ```
//!
//! It prints a table and writes JSON so figures can be compared between commits. The client
//! pre-encodes node packets before timing (a node gzips on its own machine, not the server's), so
//! the figures are the server's.
#![allow(clippy::unwrap_used)] // a benchmark run: a failed step is a failed run

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN: &str = "bench-admin-token-0123456789abcdef0123456789";

struct Opts {
    /// Scenario numbers to run (1-6); empty = all.
    only: Vec<u32>,
    /// Named scenarios (`--only abuse`); when only names are given, the numbered ones are
    /// skipped.
    names: Vec<String>,
    /// Slow connections of the `abuse` scenario.
    slow: usize,
    scale: usize,
    postgres: Option<String>,
    json_out: Option<PathBuf>,
}

impl Opts {
    fn runs(&self, scenario: u32) -> bool {
        self.only.is_empty() || self.only.contains(&scenario)
    }
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        only: Vec::new(),
        names: Vec::new(),
        slow: 10_000,
        scale: 1,
        postgres: None,
        json_out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.scale = 10,
            "--only" => {
                for item in args.next().unwrap_or_default().split(',') {
                    match item.trim().parse() {
                        Ok(n) => o.only.push(n),
                        Err(_) if !item.trim().is_empty() => o.names.push(item.trim().into()),
                        Err(_) => {}
                    }
                }
            }
            "--slow" => o.slow = args.next().and_then(|n| n.parse().ok()).unwrap_or(o.slow),
            "--postgres" => o.postgres = args.next(),
            "--json" => o.json_out = args.next().map(PathBuf::from),
            "--bench" => {}
            other if other.starts_with("--") => eprintln!("ignoring unknown option {other}"),
            _ => {}
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Server process

struct Server {
    child: Child,
    base: String,
    /// What a second process on the same database needs (`--only live` on PostgreSQL).
    url: String,
    env: Vec<(String, String)>,
    batch: usize,
    _dir: tempfile::TempDir,
    db: Db,
}

enum Db {
    Sqlite,
    Postgres { admin: String, name: String },
}

impl Server {
    fn start(opts: &Opts, batch: usize) -> Server {
        Self::start_with(opts, batch, &[])
    }

    /// A server with extra environment variables (settings of one scenario).
    fn start_with(opts: &Opts, batch: usize, env: &[(&str, &str)]) -> Server {
        Self::start_configured(opts, batch, env, "")
    }

    /// A server with a configuration file (`STARSYNC_CONFIG`) and extra environment variables.
    fn start_configured(opts: &Opts, batch: usize, env: &[(&str, &str)], config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (url, db) = match &opts.postgres {
            None => (
                dir.path().join("data/starsync.db").display().to_string(),
                Db::Sqlite,
            ),
            Some(admin) => {
                use diesel::connection::SimpleConnection;
                use diesel::Connection;
                let name = format!("starsync_bench_{}", uuid::Uuid::new_v4().simple());
                let mut c =
                    diesel::PgConnection::establish(admin).expect("connect to --postgres URL");
                c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
                let (prefix, _) = admin.rsplit_once('/').unwrap();
                (
                    format!("{prefix}/{name}"),
                    Db::Postgres {
                        admin: admin.clone(),
                        name,
                    },
                )
            }
        };
        let (child, base) = spawn_serve(dir.path(), &url, batch, env, config);
        Server {
            child,
            base,
            url,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            batch,
            _dir: dir,
            db,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory since the last reset, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.pid())
    }

    fn reset_peak(&self) {
        reset_peak(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Db::Postgres { admin, name } = &self.db {
            use diesel::connection::SimpleConnection;
            use diesel::Connection;
            if let Ok(mut c) = diesel::PgConnection::establish(admin) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}

/// Starts `starsync serve` in `dir` on the database `url`; (the process, its base URL).
/// Starts `starsync serve` on `url` with `config` as its `STARSYNC_CONFIG` file.
fn spawn_serve(
    dir: &Path,
    url: &str,
    batch: usize,
    env: &[(&str, &str)],
    config: &str,
) -> (Child, String) {
    std::fs::write(dir.join("none.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_starsync"))
        .arg("serve")
        .current_dir(dir)
        .env("STARSYNC_BIND", "127.0.0.1:0")
        .env("STARSYNC_DATA_DIR", dir.join("data"))
        .env("DATABASE_URL", url)
        .env("STARSYNC_ADMIN_TOKEN", ADMIN)
        .env("STARSYNC_BATCH_SIZE", batch.to_string())
        .env("STARSYNC_CONFIG", dir.join("none.toml"))
        .envs(env.iter().copied())
        // STARSYNC_BENCH_LOG=info keeps the per-exchange log lines (with engine
        // milliseconds) in target/bench/server.log, for profiling.
        .env(
            "RUST_LOG",
            match std::env::var("STARSYNC_BENCH_LOG") {
                Ok(level) => format!("warn,starsync::cli=info,starsync::engine={level}"),
                Err(_) => "warn,starsync::cli=info".to_string(),
            },
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn starsync serve (built by cargo bench)");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
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
            break;
        }
    }
    let keep = std::env::var("STARSYNC_BENCH_LOG").is_ok();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut log = keep.then(|| {
            let _ = std::fs::create_dir_all("target/bench");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open("target/bench/server.log")
                .expect("open target/bench/server.log")
        });
        for line in lines.map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    (child, base.expect("server address"))
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the kernel's peak-RSS counter of a process (Linux `clear_refs` value 5).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

// ---------------------------------------------------------------------------------------------
// A raw-protocol client

struct Client {
    agent: ureq::Agent,
    base: String,
    server_id: String,
}

struct BenchNode {
    id: String,
    token: String,
    next_no: u64,
    acked: u64,
}

impl Client {
    fn new(base: &str) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let mut c = Client {
            agent,
            base: base.to_string(),
            server_id: String::new(),
        };
        let (_, s) = c.get("/api/sync/status", ADMIN);
        c.server_id = s["server_node_id"].as_str().unwrap().to_string();
        c
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        read(
            self.agent
                .get(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {token}"))
                .call(),
        )
    }

    fn post(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        read(
            self.agent
                .post(&format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {token}"))
                .set("Content-Type", "application/json")
                .send_string(body),
        )
    }

    fn register(&self, code: &str) -> BenchNode {
        self.register_with(code, json!({"code": code}))
    }

    /// Registers with a full request (scopes, types).
    fn register_with(&self, code: &str, req: Value) -> BenchNode {
        let (s, b) = self.post("/api/sync/register", ADMIN, &req.to_string());
        assert!(!code.is_empty());
        assert_eq!(s, 201, "{b}");
        BenchNode {
            id: b["node_id"].as_str().unwrap().to_string(),
            token: b["auth_token"].as_str().unwrap().to_string(),
            next_no: 1,
            acked: 0,
        }
    }

    fn packet_json(&self, node: &BenchNode, no: u64, ack: u64, changes: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "format": 1, "schema_version": "1.0.0",
            "sender_node_id": node.id, "receiver_node_id": self.server_id,
            "packet_no": no, "ack_packet_no": ack, "created_at": now(), "more": false,
            "changes": changes,
        }))
        .unwrap()
    }

    /// An exchange with a pre-encoded envelope; returns the decoded server packet.
    fn exchange_body(&self, node: &mut BenchNode, body: &str) -> Value {
        let (s, b) = self.post("/api/sync/exchange", &node.token, body);
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["error_count"], 0, "{b}");
        node.next_no += 1;
        let packet = decode(b["packet_data"].as_str().unwrap());
        node.acked = packet["packet_no"].as_u64().unwrap();
        packet
    }

    fn envelope(&self, node: &BenchNode, changes: &[Value]) -> String {
        let json = self.packet_json(node, node.next_no, node.acked, changes);
        json!({"packet_data": hex::encode(gzip(&json))}).to_string()
    }

    /// Receives until the server has nothing more; returns the number of changes received.
    fn drain(&self, node: &mut BenchNode) -> usize {
        let mut n = 0;
        loop {
            let body = self.envelope(node, &[]);
            let p = self.exchange_body(node, &body);
            n += p["changes"].as_array().unwrap().len();
            if p["more"] != true {
                // One more acknowledges the last packet.
                let body = self.envelope(node, &[]);
                self.exchange_body(node, &body);
                return n;
            }
        }
    }
}

fn read(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader()
        .take(1 << 30)
        .read_to_string(&mut text)
        .unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn now() -> String {
    starsync_protocol::now_ts()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    starsync_protocol::codec::gzip_bytes(data)
}

fn decode(hex_text: &str) -> Value {
    let bytes = hex::decode(hex_text).unwrap();
    serde_json::from_slice(&starsync_protocol::codec::inflate_limited(&bytes, 1 << 30).unwrap())
        .unwrap()
}

/// A realistic ~300-byte entity.
fn entity(i: usize) -> Value {
    json!({
        "name": format!("Estimate {i:07}"),
        "customer": format!("Customer {:05} Ltd.", i % 9973),
        "address": format!("{} Market Street, Springfield", i % 997),
        "value": (i * 37) % 100_000,
        "currency": "EUR",
        "status": if i.is_multiple_of(3) { "open" } else { "sent" },
        "lines": [{"item": "Roof repair", "qty": i % 7 + 1, "price": 150.5}, {"item": "Gutter", "qty": 2, "price": 42.0}],
        "notes": "Customer asked for a callback before Friday.",
    })
}

fn insert_change(i: usize) -> Value {
    json!({
        "change_id": uuid::Uuid::new_v4().to_string(),
        "entity_type": "Estimate",
        "entity_uuid": uuid::Uuid::new_v4().to_string(),
        "operation": "INSERT",
        "base_version": 0,
        "version": null,
        "updated_at": now(),
        "data": entity(i),
    })
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[derive(Default)]
struct Wire {
    changes: usize,
    json_bytes: usize,
    gzip_bytes: usize,
    hex_bytes: usize,
}

/// Pushes `n` new entities from one node in packets of `batch`, timing only the exchanges.
fn push(
    client: &Client,
    node: &mut BenchNode,
    n: usize,
    batch: usize,
    wire: &mut Wire,
) -> Duration {
    // Pre-encode: packet k acknowledges server packet k - 1 (they advance in lockstep).
    let mut bodies = Vec::with_capacity(n / batch + 1);
    let (mut no, mut ack) = (node.next_no, node.acked);
    let mut i = 0;
    while i < n {
        let k = batch.min(n - i);
        let changes: Vec<Value> = (i..i + k).map(insert_change).collect();
        let json = client.packet_json(node, no, ack, &changes);
        let gz = gzip(&json);
        let hex = hex::encode(&gz);
        wire.changes += k;
        wire.json_bytes += json.len();
        wire.gzip_bytes += gz.len();
        wire.hex_bytes += hex.len();
        bodies.push(json!({"packet_data": hex}).to_string());
        no += 1;
        ack += 1;
        i += k;
    }
    let start = Instant::now();
    for body in &bodies {
        client.exchange_body(node, body);
    }
    start.elapsed()
}

struct Report {
    rows: Vec<(String, String, String)>,
    json: BTreeMap<String, Value>,
}

impl Report {
    fn add(&mut self, key: &str, label: &str, value: f64, unit: &str) {
        let shown = if value >= 100.0 {
            format!("{value:.0}")
        } else {
            format!("{value:.2}")
        };
        println!("  {label:<58} {shown:>12} {unit}");
        self.rows.push((label.to_string(), shown, unit.to_string()));
        self.json.insert(key.to_string(), json!(value));
    }
}

fn main() {
    let opts = parse_opts();
    let backend = if opts.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let n = 100_000 / opts.scale;
    let batch = 100;
    let mut r = Report {
        rows: Vec::new(),
        json: BTreeMap::new(),
    };
    println!(
        "starsync benchmark: backend {backend}, {n} changes, batch {batch}, {} cores",
        num_cpus()
    );
    if !opts.names.is_empty() {
        for name in &opts.names {
            match name.as_str() {
                "abuse" => abuse_slow_connections(&opts, &mut r),
                "abuse-memory" => abuse_memory(&opts),
                "watermelon" => watermelon(&opts, n, batch, &mut r),
                "scopes" => scopes(&opts, &mut r),
                "live" => live(&opts, &mut r),
                "peer" => peer_phases(&opts, &mut r),
                other => eprintln!("unknown scenario {other}"),
            }
        }
        if opts.only.is_empty() {
            write_report(&opts, backend, n, batch, &r);
            return;
        }
    }

    // (1) ingest with one node, and (4) initial sync of a new node from that data.
    let mut wire = Wire::default();
    let ingest_1 = {
        let server = Server::start(&opts, batch);
        let client = Client::new(&server.base);
        let mut writer = client.register("writer");
        server.reset_peak();
        let t = push(&client, &mut writer, n, batch, &mut wire);
        let rate = n as f64 / t.as_secs_f64();
        r.add(
            "ingest_changes_per_s",
            "(1) ingest, 1 node: changes/s",
            rate,
            "changes/s",
        );
        r.add(
            "ingest_server_peak_rss_mib",
            "    server peak RSS",
            server.peak_rss_mib(),
            "MiB",
        );

        // (4) initial sync.
        let mut fresh = client.register("fresh");
        server.reset_peak();
        reset_peak(std::process::id());
        let start = Instant::now();
        let got = client.drain(&mut fresh);
        let t = start.elapsed();
        assert_eq!(got, n, "the new node receives every entity");
        r.add(
            "initial_sync_entities_per_s",
            "(4) initial sync of a new node: entities/s",
            n as f64 / t.as_secs_f64(),
            "entities/s",
        );
        r.add(
            "initial_sync_server_peak_rss_mib",
            "    server peak RSS",
            server.peak_rss_mib(),
            "MiB",
        );
        r.add(
            "initial_sync_client_peak_rss_mib",
            "    receiving client peak RSS (raw protocol client)",
            peak_rss_mib(std::process::id()),
            "MiB",
        );
        if !opts.runs(4) {
            // (4) not asked for.
        } else if let Some(node_rss) = node_initial_sync(&server, n) {
            r.add(
                "initial_sync_node_seconds",
                "    starsync-node sync of the same data: seconds",
                node_rss.0,
                "s",
            );
            r.add(
                "initial_sync_node_peak_rss_mib",
                "    starsync-node peak RSS",
                node_rss.1,
                "MiB",
            );
        }
        rate
    };

    // (2) ingest with 1,000 registered nodes.
    if opts.runs(2) {
        let server = Server::start(&opts, batch);
        let client = Client::new(&server.base);
        for i in 0..1000 {
            client.register(&format!("idle-{i:04}"));
        }
        let mut writer = client.register("writer");
        server.reset_peak();
        let t = push(&client, &mut writer, n, batch, &mut Wire::default());
        let rate = n as f64 / t.as_secs_f64();
        r.add(
            "ingest_1000_nodes_changes_per_s",
            "(2) ingest with 1,000 registered nodes: changes/s",
            rate,
            "changes/s",
        );
        r.add(
            "ingest_1000_nodes_ratio",
            "    ratio to (1)",
            rate / ingest_1,
            "x",
        );
        r.add(
            "ingest_1000_nodes_server_peak_rss_mib",
            "    server peak RSS",
            server.peak_rss_mib(),
            "MiB",
        );
        // Operators' view with every one of the 1,000 nodes holding all entities pending.
        let start = Instant::now();
        let (s, body) = client.get("/api/sync/status", ADMIN);
        assert_eq!(s, 200, "{body}");
        r.add(
            "admin_status_1000_nodes_seconds",
            "    GET /api/sync/status with 1,000 nodes all behind: seconds",
            start.elapsed().as_secs_f64(),
            "s",
        );
    }

    // (3) fan-out and (5) idle latency.
    if opts.runs(3) || opts.runs(5) {
        let server = Server::start(&opts, batch);
        let client = Client::new(&server.base);
        let readers: Vec<BenchNode> = (0..100)
            .map(|i| client.register(&format!("reader-{i:03}")))
            .collect();
        let mut writer = client.register("writer");
        let fan = 10_000 / opts.scale;
        push(&client, &mut writer, fan, batch, &mut Wire::default());
        server.reset_peak();
        let start = Instant::now();
        let readers = parallel(
            readers,
            4,
            |client, node| {
                let got = client.drain(node);
                assert_eq!(got, fan);
            },
            &server.base,
        );
        let t = start.elapsed();
        r.add(
            "fanout_seconds",
            &format!("(3) fan-out: {fan} changes to each of 100 nodes: seconds"),
            t.as_secs_f64(),
            "s",
        );
        r.add(
            "fanout_deliveries_per_s",
            "    deliveries/s",
            (fan * 100) as f64 / t.as_secs_f64(),
            "changes/s",
        );
        r.add(
            "fanout_server_peak_rss_mib",
            "    server peak RSS",
            server.peak_rss_mib(),
            "MiB",
        );

        // (5) idle exchanges from 100 concurrently syncing nodes. (5a) paced like desktop
        // daemons: each node exchanges every 250 ms (400 exchanges/s offered); (5b) saturated:
        // every node back to back, which measures capacity (latency there is queueing).
        let mut readers = readers;
        for (label, key, interval) in [
            (
                "(5a) idle exchange, 100 nodes each every 250 ms",
                "idle_paced",
                Some(Duration::from_millis(250)),
            ),
            (
                "(5b) idle exchange, 100 nodes back to back (saturated)",
                "idle_saturated",
                None,
            ),
        ] {
            server.reset_peak();
            let rounds = 40 / opts.scale.min(4);
            let lat = std::sync::Mutex::new(Vec::new());
            let start = Instant::now();
            let returned = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for (i, mut node) in std::mem::take(&mut readers).into_iter().enumerate() {
                    let (base, lat, returned) = (server.base.clone(), &lat, &returned);
                    s.spawn(move || {
                        let client = Client::new(&base);
                        // A daemon keeps its connection: one untimed exchange opens it.
                        let body = client.envelope(&node, &[]);
                        client.exchange_body(&mut node, &body);
                        let mut mine = Vec::with_capacity(rounds);
                        // Spread the nodes over the interval, as independent daemons would be.
                        let offset = interval.map(|iv| iv * i as u32 / 100).unwrap_or_default();
                        let t0 = Instant::now() + offset;
                        for k in 0..rounds {
                            if let Some(iv) = interval {
                                let due = t0 + iv * k as u32;
                                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                    std::thread::sleep(wait);
                                }
                            }
                            let body = client.envelope(&node, &[]);
                            let t = Instant::now();
                            client.exchange_body(&mut node, &body);
                            mine.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        lat.lock().unwrap().extend(mine);
                        returned.lock().unwrap().push(node);
                    });
                }
            });
            readers = returned.into_inner().unwrap();
            let wall = start.elapsed();
            let mut lat = lat.into_inner().unwrap();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            r.add(
                &format!("{key}_p50_ms"),
                &format!("{label}: p50"),
                pct(0.50),
                "ms",
            );
            r.add(&format!("{key}_p99_ms"), "    p99", pct(0.99), "ms");
            r.add(
                &format!("{key}_exchanges_per_s"),
                "    exchanges/s",
                lat.len() as f64 / wall.as_secs_f64(),
                "exchanges/s",
            );
            r.add(
                &format!("{key}_server_peak_rss_mib"),
                "    server peak RSS",
                server.peak_rss_mib(),
                "MiB",
            );
        }

        // Single-client latency (no queueing behind 99 others).
        let mut solo = client.register("solo");
        let mut l = Vec::new();
        for _ in 0..300 {
            let body = client.envelope(&solo, &[]);
            let t = Instant::now();
            client.exchange_body(&mut solo, &body);
            l.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        l.sort_by(|a, b| a.partial_cmp(b).unwrap());
        r.add(
            "idle_single_p50_ms",
            "    one node alone: p50",
            l[l.len() / 2],
            "ms",
        );
        r.add(
            "idle_single_p99_ms",
            "    one node alone: p99",
            l[l.len() * 99 / 100],
            "ms",
        );
    }

    // The scopes scenario at a tenth of its size rides along with --quick (the full one is
    // `--only scopes`).
    if opts.scale > 1 && opts.only.is_empty() {
        scopes(&opts, &mut r);
    }

    // (6) packet size.
    r.add(
        "wire_json_bytes_per_change",
        "(6) packet JSON per change",
        wire.json_bytes as f64 / wire.changes as f64,
        "bytes",
    );
    r.add(
        "wire_gzip_bytes_per_change",
        "    gzip per change (file transfer)",
        wire.gzip_bytes as f64 / wire.changes as f64,
        "bytes",
    );
    r.add(
        "wire_hex_bytes_per_change",
        "    hex envelope per change (HTTP)",
        wire.hex_bytes as f64 / wire.changes as f64,
        "bytes",
    );
    r.add(
        "wire_gzip_ratio",
        "    gzip ratio",
        wire.json_bytes as f64 / wire.gzip_bytes as f64,
        "x",
    );

    // The peer comparison's phases (issue 15), when every scenario runs.
    if opts.only.is_empty() {
        peer_phases(&opts, &mut r);
    }

    write_report(&opts, backend, n, batch, &r);
}

/// Writes the JSON report and prints the table.
fn write_report(opts: &Opts, backend: &str, n: usize, batch: usize, r: &Report) {
    let out = opts
        .json_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/sync-{backend}.json")));
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let doc = json!({
        "backend": backend,
        "changes": n,
        "batch_size": batch,
        "cores": num_cpus(),
        "commit": git_commit(),
        "results": r.json,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("\n| measure | {backend} |\n| --- | ---: |");
    for (label, value, unit) in &r.rows {
        println!("| {} | {value} {unit} |", label.trim());
    }
    println!("\nwrote {}", out.display());
}

/// Runs `f` for every node on `threads` worker threads, each with its own HTTP client.
fn parallel(
    nodes: Vec<BenchNode>,
    threads: usize,
    f: impl Fn(&Client, &mut BenchNode) + Sync,
    base: &str,
) -> Vec<BenchNode> {
    let queue = std::sync::Mutex::new(nodes);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let client = Client::new(base);
                loop {
                    let next = queue.lock().unwrap().pop();
                    match next {
                        Some(mut node) => {
                            f(&client, &mut node);
                            done.lock().unwrap().push(node);
                        }
                        None => break,
                    }
                }
            });
        }
    });
    done.into_inner().unwrap()
}

/// Initial sync through the real node client (`starsync-node`), measured with /usr/bin/time.
/// Returns (seconds, peak RSS MiB), or None (saying why) when the node binary or `time` is
/// unavailable. Once it runs, a failed step fails the benchmark.
fn node_initial_sync(server: &Server, expected: usize) -> Option<(f64, f64)> {
    let node_bin = Path::new(env!("CARGO_BIN_EXE_starsync")).with_file_name("starsync-node");
    if !node_bin.exists() {
        println!(
            "  (4) starsync-node sync skipped: {} is missing (cargo build --release -p \
             starsync-node-cli)",
            node_bin.display()
        );
        return None;
    }
    if !Path::new("/usr/bin/time").exists() {
        println!("  (4) starsync-node sync skipped: /usr/bin/time is missing");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let init = Command::new(&node_bin)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "init",
            "--server",
            &server.base,
            "--code",
            "node-bench",
            "--name",
            "bench",
            "--admin-token",
            ADMIN,
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "starsync-node init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args([
            "-f",
            "MAXRSS_KB=%M",
            node_bin.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "sync",
        ])
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "starsync-node sync failed: {stderr}");
    let kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS_KB="))
        .unwrap_or_else(|| panic!("no MAXRSS_KB line from /usr/bin/time: {stderr}"))
        .trim()
        .parse()
        .unwrap();
    let list = Command::new(&node_bin)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
            "list",
            "Estimate",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&list.stdout).unwrap_or_else(|e| {
        panic!(
            "starsync-node list printed no JSON ({e}): {}",
            String::from_utf8_lossy(&list.stderr)
        )
    });
    let count = v
        .as_array()
        .unwrap_or_else(|| panic!("starsync-node list: not an array: {v}"))
        .len();
    assert_eq!(
        count, expected,
        "starsync-node holds every entity after its initial sync"
    );
    Some((secs, kb / 1024.0))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// `--only abuse`: slow connections

/// Grace of the server's body deadline in the `abuse` scenario: long enough for every slow
/// connection to be open and held while latencies are measured, short enough to watch the
/// deadline free them afterwards.
const ABUSE_BODY_TIMEOUT_SECS: u64 = 60;

/// Opens `--slow N` connections (default 10,000) that each send a valid node token, a
/// `Content-Length` of 1 MB and the first bytes of an exchange body, then half trickle one byte
/// a second and half stall. While they are held, measures `/health` (a new connection per
/// request) and a normal node's exchanges against a baseline taken before; then waits for the
/// body deadline and counts the connections the server answered 408 and closed.
fn abuse_slow_connections(opts: &Opts, r: &mut Report) {
    use std::io::Write;
    use std::net::TcpStream;

    // Every slow connection is a descriptor here as well as in the server.
    let reserve = 200;
    let hard = rlimit::Resource::NOFILE.get().map(|(_, h)| h).unwrap_or(0);
    let soft = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let mut n = opts.slow;
    if (n + reserve) as u64 > soft {
        n = (soft as usize).saturating_sub(reserve);
        println!(
            "  note: this process may open {soft} files (hard limit {hard}); {} slow connections \
             need {}: using {n}",
            opts.slow,
            opts.slow + reserve
        );
    }
    let timeout = ABUSE_BODY_TIMEOUT_SECS.to_string();
    let server = Server::start_with(opts, 100, &[("STARSYNC_BODY_TIMEOUT_SECS", &timeout)]);
    let client = Client::new(&server.base);
    let slow_node = client.register("slow");
    let mut normal = client.register("normal");
    let addr = server
        .base
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
        .unwrap();

    // Latencies of one round: /health on a new connection each time, and exchanges carrying
    // one new entity each on the node's kept connection.
    let mut next_entity = 0usize;
    let mut measure = |normal: &mut BenchNode, rounds: usize| -> (Vec<f64>, Vec<f64>) {
        let mut health = Vec::with_capacity(rounds);
        let mut exchange = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let status = raw_health(addr);
            health.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "/health while slow connections are held");
            let body = client.envelope(normal, &[insert_change(next_entity)]);
            next_entity += 1;
            let t = Instant::now();
            client.exchange_body(normal, &body);
            exchange.push(t.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_millis(20));
        }
        (health, exchange)
    };
    let (base_health, base_exchange) = measure(&mut normal, 100);

    // Open the slow connections.
    let head = format!(
        "POST /api/sync/exchange HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{\"packet_data\": \"",
        slow_node.token
    );
    let start = Instant::now();
    let mut slow: Vec<TcpStream> = Vec::with_capacity(n);
    let mut failed_connects = 0usize;
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(mut s) => {
                if s.write_all(head.as_bytes()).is_ok() {
                    s.set_nonblocking(true).unwrap();
                    slow.push(s);
                } else {
                    failed_connects += 1;
                }
            }
            Err(_) => failed_connects += 1,
        }
    }
    let opened_in = start.elapsed();
    println!(
        "  opened {} slow connections in {:.1} s ({failed_connects} failed)",
        slow.len(),
        opened_in.as_secs_f64()
    );

    // Half of them trickle one byte a second until told to stop; the others stall.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (health, exchange, held_during, server_fds, server_rss) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for conn in slow.iter().step_by(2) {
                    let _ = (&*conn).write(b"0");
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        // Let the server take every connection through authentication to the body read.
        std::thread::sleep(Duration::from_secs(3));
        let (health, exchange) = measure(&mut normal, 200);
        let held = count_held(&slow);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .map(|d| d.count())
            .unwrap_or(0);
        let rss = server.peak_rss_mib();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (health, exchange, held, fds, rss)
    });
    let measured_by = start.elapsed();
    assert!(
        measured_by < Duration::from_secs(ABUSE_BODY_TIMEOUT_SECS),
        "measuring took longer than the body grace ({measured_by:?}): raise ABUSE_BODY_TIMEOUT_SECS"
    );

    // The body deadline frees them: wait past the grace and count the 408 answers.
    let wait_until = start + Duration::from_secs(ABUSE_BODY_TIMEOUT_SECS + 15);
    while Instant::now() < wait_until && count_held(&slow) > 0 {
        std::thread::sleep(Duration::from_secs(1));
    }
    let freed_after = start.elapsed();
    let (answered_408, closed) = count_answers(&slow);
    let held_after = count_held(&slow);
    let (after_health, after_exchange) = measure(&mut normal, 50);
    drop(slow);

    let p = |v: &[f64], q: f64| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
    };
    r.add(
        "abuse_slow_connections_opened",
        &format!(
            "(abuse) slow connections opened (of {n}; body grace {ABUSE_BODY_TIMEOUT_SECS} s)"
        ),
        (n - failed_connects) as f64,
        "connections",
    );
    r.add(
        "abuse_slow_connections_held",
        "    held open by the server while measuring",
        held_during as f64,
        "connections",
    );
    r.add(
        "abuse_server_open_fds",
        "    server open file descriptors",
        server_fds as f64,
        "fds",
    );
    r.add(
        "abuse_server_peak_rss_mib",
        "    server peak RSS",
        server_rss,
        "MiB",
    );
    for (key, label, base, held, after) in [
        (
            "health",
            "GET /health (new connection)",
            &base_health,
            &health,
            &after_health,
        ),
        (
            "exchange",
            "exchange, 1 change",
            &base_exchange,
            &exchange,
            &after_exchange,
        ),
    ] {
        r.add(
            &format!("abuse_{key}_baseline_p50_ms"),
            &format!("    {label}, before: p50"),
            p(base, 0.5),
            "ms",
        );
        r.add(
            &format!("abuse_{key}_held_p50_ms"),
            &format!("    {label}, {held_during} held: p50"),
            p(held, 0.5),
            "ms",
        );
        r.add(
            &format!("abuse_{key}_held_p99_ms"),
            "        p99",
            p(held, 0.99),
            "ms",
        );
        r.add(
            &format!("abuse_{key}_held_max_ms"),
            "        max",
            p(held, 1.0),
            "ms",
        );
        r.add(
            &format!("abuse_{key}_after_p50_ms"),
            &format!("    {label}, after they were cut: p50"),
            p(after, 0.5),
            "ms",
        );
    }
    r.add(
        "abuse_answered_408",
        "    slow connections answered 408 request_timeout",
        answered_408 as f64,
        "connections",
    );
    r.add(
        "abuse_closed_without_answer",
        "    closed without an answer",
        closed as f64,
        "connections",
    );
    r.add(
        "abuse_still_held_after_deadline",
        "    still held after the deadline",
        held_after as f64,
        "connections",
    );
    r.add(
        "abuse_freed_after_seconds",
        "    all freed after (from the first connection)",
        freed_after.as_secs_f64(),
        "s",
    );
}

/// `GET /health` on a new connection; the status code.
fn raw_health(addr: std::net::SocketAddr) -> u16 {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(30)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Connections the server neither answered nor closed.
fn count_held(conns: &[std::net::TcpStream]) -> usize {
    let mut b = [0u8; 1];
    conns
        .iter()
        .filter(|c| matches!(c.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
        .count()
}

/// (answered 408, closed without an answer) among the connections.
fn count_answers(conns: &[std::net::TcpStream]) -> (usize, usize) {
    let (mut answered, mut closed) = (0, 0);
    let mut b = [0u8; 12];
    for c in conns {
        match c.peek(&mut b) {
            Ok(n) if n >= 12 && &b[..12] == b"HTTP/1.1 408" => answered += 1,
            Ok(0) => closed += 1,
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
            _ => {}
        }
    }
    (answered, closed)
}

// ---------------------------------------------------------------------------------------------
// abuse-memory: 50 maximum-size requests and 50 maximum-size answers at once

/// `--only abuse-memory` (issue 8, item 2): 50 nodes each send a maximum-size request (a body
/// near the 16 MiB limit inflating to near 64 MiB) while 50 others are each answered with
/// 32 MiB (the answer budget) of large entities, all at once, against a release server with
/// default limits. It samples the server's peak RSS (VmHWM) and `/health` latency throughout,
/// and writes target/bench/abuse-memory-<backend>.json.
fn abuse_memory(opts: &Opts) {
    const MIB: usize = 1024 * 1024;
    const N: usize = 50;
    let backend = if opts.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!("abuse-memory: backend {backend}, {N} max-size requests + {N} max-size answers");
    let server = Server::start(opts, 100);
    let client = Client::new(&server.base);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);

    // The answers: 4 entities of ~8 MiB (the entity limit) of random hex digits (gzip keeps about
    // 55%), pending for every node registered afterwards; an answer holds 3 (32 MiB budget).
    let mut writer = client.register("abuse-writer");
    for _ in 0..4 {
        let text: String = (0..8 * MIB - 64 * 1024)
            .map(|_| char::from(b"0123456789abcdef"[(rng.next() % 16) as usize]))
            .collect();
        let mut c = insert_change(0);
        c["data"] = json!({ "blob": text });
        let body = client.envelope(&writer, &[c]);
        client.exchange_body(&mut writer, &body);
    }

    // The requests: entities of ~8 MiB of a 2-letter text (mostly `a`, 7% `b`), which gzip about
    // 8:1, as many as fit under both the 16 MiB body and the 64 MiB decompressed limits.
    let filler: String = (0..8 * MIB - 64 * 1024)
        .map(|_| if rng.next() % 100 < 7 { 'b' } else { 'a' })
        .collect();
    let ratio = filler.len() as f64 / gzip(filler.as_bytes()).len() as f64;
    let (body_room, json_room) = (16 * MIB - 256 * 1024, 64 * MIB - 256 * 1024);
    let per_packet = ((body_room as f64 / 2.0 * ratio) as usize).min(json_room) / filler.len();
    let uploaders: Vec<BenchNode> = (0..N)
        .map(|i| client.register(&format!("abuse-up-{i:02}")))
        .collect();
    let readers: Vec<BenchNode> = (0..N)
        .map(|i| client.register(&format!("abuse-down-{i:02}")))
        .collect();
    let mut json_len = 0;
    let bodies: Vec<String> = uploaders
        .iter()
        .map(|node| {
            let changes: Vec<Value> = (0..per_packet)
                .map(|_| {
                    let mut c = insert_change(0);
                    c["data"] = json!({ "blob": filler });
                    c
                })
                .collect();
            let json = client.packet_json(node, node.next_no, node.acked, &changes);
            json_len = json.len();
            json!({"packet_data": hex::encode(gzip(&json))}).to_string()
        })
        .collect();
    drop(filler);
    let body_len = bodies[0].len();
    println!(
        "  each request: {per_packet} entities, {:.1} MiB body, {:.1} MiB decompressed",
        body_len as f64 / MIB as f64,
        json_len as f64 / MIB as f64
    );

    let reader_bodies: Vec<String> = readers.iter().map(|n| client.envelope(n, &[])).collect();
    server.reset_peak();
    let start = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    let health = std::sync::Mutex::new(Vec::<f64>::new());
    let received = std::sync::atomic::AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let rss_samples = std::sync::Mutex::new(Vec::<f64>::new());
    let barrier = std::sync::Barrier::new(2 * N);
    let exchange = |node: &BenchNode, body: &str| {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1800))
            .build();
        let r = agent
            .post(&format!("{}/api/sync/exchange", server.base))
            .set("Authorization", &format!("Bearer {}", node.token))
            .set("Content-Type", "application/json")
            .send_string(body);
        match r {
            // Streamed to nowhere: the client holds none of the 50 answers.
            Ok(resp) => {
                let n = std::io::copy(&mut resp.into_reader(), &mut std::io::sink()).unwrap();
                received.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => failures.lock().unwrap().push(e.to_string()),
        }
    };
    std::thread::scope(|s| {
        // /health every 100 ms, and the server's RSS beside it.
        s.spawn(|| {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let r = agent.get(&format!("{}/health", server.base)).call();
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                if r.map(|r| r.status()).unwrap_or(0) != 200 {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("/health failed after {ms:.0} ms"));
                }
                health.lock().unwrap().push(ms);
                rss_samples.lock().unwrap().push(vm_rss_mib(server.pid()));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let mut handles = Vec::new();
        for (node, body) in uploaders.iter().zip(&bodies) {
            let (barrier, exchange) = (&barrier, &exchange);
            handles.push(s.spawn(move || {
                barrier.wait();
                exchange(node, body);
            }));
        }
        for (node, body) in readers.iter().zip(&reader_bodies) {
            let (barrier, exchange) = (&barrier, &exchange);
            handles.push(s.spawn(move || {
                barrier.wait();
                exchange(node, body);
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let wall = start.elapsed();
    let peak = server.peak_rss_mib();
    let failures = failures.into_inner().unwrap();
    let mut lat = health.into_inner().unwrap();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let mut r = Report {
        rows: Vec::new(),
        json: BTreeMap::new(),
    };
    r.add(
        "abuse_memory_seconds",
        &format!("{N} max requests + {N} max answers at once: seconds"),
        wall.as_secs_f64(),
        "s",
    );
    r.add(
        "abuse_memory_received_mib",
        "    answer bytes received by the 100 clients",
        received.into_inner() as f64 / MIB as f64,
        "MiB",
    );
    r.add(
        "abuse_memory_server_peak_rss_mib",
        "    server peak RSS (VmHWM)",
        peak,
        "MiB",
    );
    let sampled = rss_samples.into_inner().unwrap();
    r.add(
        "abuse_memory_server_max_sampled_rss_mib",
        "    server RSS, highest 100 ms sample",
        sampled.iter().cloned().fold(0.0, f64::max),
        "MiB",
    );
    r.add(
        "abuse_memory_health_p50_ms",
        "    /health latency p50",
        pct(0.5),
        "ms",
    );
    r.add(
        "abuse_memory_health_p99_ms",
        "    /health latency p99",
        pct(0.99),
        "ms",
    );
    r.add(
        "abuse_memory_health_max_ms",
        "    /health latency max",
        pct(1.0),
        "ms",
    );
    r.add(
        "abuse_memory_health_samples",
        "    /health samples",
        lat.len() as f64,
        "",
    );
    r.add(
        "abuse_memory_failures",
        "    failed requests (exchanges and /health)",
        failures.len() as f64,
        "",
    );
    for f in failures.iter().take(5) {
        println!("    failure: {f}");
    }
    let out = PathBuf::from(format!("target/bench/abuse-memory-{backend}.json"));
    let _ = std::fs::create_dir_all("target/bench");
    let doc = json!({"backend": backend, "commit": git_commit(), "results": r.json});
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!(
        "  target: peak RSS <= 1024 MiB, /health <= 1000 ms; wrote {}",
        out.display()
    );
}

/// Current resident memory of a process, in MiB.
fn vm_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A tiny deterministic generator for benchmark data.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// `--only watermelon` (issue 10): a WatermelonDB first pull of the whole data set, streamed

/// Ingests `n` entities from a packet node, then measures a WatermelonDB app's first pull of
/// all of them (time, answer size, the server's peak RSS during the pull: the answer is
/// streamed a page at a time, so it should not grow with `n`) and one push of 5,000 records.
fn watermelon(opts: &Opts, n: usize, batch: usize, r: &mut Report) {
    println!("WatermelonDB ({n} records)");
    let server = Server::start(opts, batch);
    let client = Client::new(&server.base);
    let mut writer = client.register("writer");
    let mut wire = Wire::default();
    push(&client, &mut writer, n, batch, &mut wire);
    let app = client.register("watermelon-app");
    let before = server.peak_rss_mib();
    server.reset_peak();
    let start = Instant::now();
    let resp = client
        .agent
        .get(&format!(
            "{}/api/sync/watermelon/pull?last_pulled_at=null&schema_version=1&migration=null",
            server.base
        ))
        .set("Authorization", &format!("Bearer {}", app.token))
        .call()
        .unwrap();
    let mut text = Vec::new();
    resp.into_reader().read_to_end(&mut text).unwrap();
    let pull = start.elapsed();
    let peak = server.peak_rss_mib();
    let body: Value = serde_json::from_slice(&text).unwrap();
    let created = body["changes"]["Estimate"]["created"].as_array().unwrap();
    assert_eq!(created.len(), n, "the first pull carries every record");
    let timestamp = body["timestamp"].as_i64().unwrap();
    r.add(
        "watermelon_first_pull_s",
        &format!("first pull of {n} records"),
        pull.as_secs_f64(),
        "s",
    );
    r.add(
        "watermelon_first_pull_mib",
        "    answer size (JSON)",
        text.len() as f64 / (1024.0 * 1024.0),
        "MiB",
    );
    r.add(
        "watermelon_server_rss_before_pull_mib",
        "    server peak RSS before the pull (after ingest)",
        before,
        "MiB",
    );
    r.add(
        "watermelon_first_pull_server_peak_rss_mib",
        "    server peak RSS during the pull",
        peak,
        "MiB",
    );
    drop(body);
    drop(text);

    let records: Vec<Value> = (0..5000)
        .map(|i| {
            json!({"id": uuid::Uuid::new_v4().to_string(), "_status": "created", "_changed": "",
                   "title": format!("bulk {i}"), "done": false, "position": i})
        })
        .collect();
    let push_body =
        json!({"changes": {"tasks": {"created": records, "updated": [], "deleted": []}},
                           "last_pulled_at": timestamp})
        .to_string();
    let start = Instant::now();
    let (s, b) = client.post("/api/sync/watermelon/push", &app.token, &push_body);
    let t = start.elapsed();
    assert_eq!(s, 200, "{b}");
    r.add(
        "watermelon_push_5000_s",
        "push of 5,000 records (one request)",
        t.as_secs_f64(),
        "s",
    );
}

// ---------------------------------------------------------------------------------------------
// `--only scopes` (issue 9, part 3): many tenants on one hub

/// 1,000 tenants (100 with `--quick`) with two single-scope nodes each, 100 entities per tenant.
/// Measures (a) ingest: the first node of every tenant pushes its 100 entities (one packet), on
/// a hub with `[scopes]` and on one without, same shape, same run (target: scoped ≥ 0.8×);
/// (b) one node's initial sync of its tenant's 100 entities on the full hub, against the same
/// on a hub holding that tenant alone (target ≤ 20 ms, and independent of other tenants).
fn scopes(opts: &Opts, r: &mut Report) {
    let tenants = 1000 / opts.scale;
    let per = 100;
    println!(
        "scopes: {tenants} tenants x 2 nodes, {} entities",
        tenants * per
    );
    let config = "[scopes]\nfield = \"tenant_id\"\n";
    let change = |t: usize, i: usize| {
        let mut c = insert_change(t * per + i);
        c["data"]["tenant_id"] = json!(format!("tenant-{t:04}"));
        c
    };
    // Registers the nodes and pushes every tenant's entities; returns (seconds, readers).
    let run = |server: &Server, scoped: bool, tenants: usize| {
        let client = Client::new(&server.base);
        let mut writers = Vec::with_capacity(tenants);
        let mut readers = Vec::with_capacity(tenants);
        for t in 0..tenants {
            for (k, list) in [(0, &mut writers), (1, &mut readers)] {
                let code = format!("t{t:04}-{k}");
                let mut req = json!({ "code": code });
                if scoped {
                    req["scopes"] = json!([format!("tenant-{t:04}")]);
                }
                list.push(client.register_with(&code, req));
            }
        }
        let bodies: Vec<String> = writers
            .iter()
            .enumerate()
            .map(|(t, w)| {
                let changes: Vec<Value> = (0..per).map(|i| change(t, i)).collect();
                client.envelope(w, &changes)
            })
            .collect();
        let start = Instant::now();
        for (w, body) in writers.iter_mut().zip(&bodies) {
            client.exchange_body(w, body);
        }
        (start.elapsed().as_secs_f64(), readers, client)
    };

    let unscoped = Server::start(opts, 100);
    let (t_plain, _, _) = run(&unscoped, false, tenants);
    drop(unscoped);
    let scoped = Server::start_configured(opts, 100, &[], config);
    let (t_scoped, mut readers, client) = run(&scoped, true, tenants);
    let n = (tenants * per) as f64;
    r.add(
        "scopes_ingest_unscoped_changes_per_s",
        &format!("(S1) ingest, {tenants} writers x {per}, no [scopes]: changes/s"),
        n / t_plain,
        "changes/s",
    );
    r.add(
        "scopes_ingest_scoped_changes_per_s",
        "     same with [scopes], one scope per node: changes/s",
        n / t_scoped,
        "changes/s",
    );
    r.add(
        "scopes_ingest_ratio",
        "     ratio scoped / unscoped (target >= 0.8)",
        t_plain / t_scoped,
        "x",
    );

    // (S2) initial sync of one tenant's 100 entities, on 20 tenants spread over the hub.
    let mut ms = Vec::new();
    let step = (tenants / 20).max(1);
    for t in (0..tenants).step_by(step) {
        let start = Instant::now();
        let got = client.drain(&mut readers[t]);
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(got, per, "tenant {t} receives exactly its entities");
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    r.add(
        "scopes_initial_sync_p50_ms",
        &format!("(S2) initial sync of one tenant's {per} entities, hub of {tenants}: p50"),
        ms[ms.len() / 2],
        "ms",
    );
    r.add(
        "scopes_initial_sync_max_ms",
        "     max (target <= 20)",
        ms[ms.len() - 1],
        "ms",
    );
    // The operator's view: every node's pending count in one pass.
    let start = Instant::now();
    let (s, body) = client.get("/api/sync/status", ADMIN);
    assert_eq!(s, 200, "{body}");
    r.add(
        "scopes_admin_status_seconds",
        &format!(
            "     GET /api/sync/status, {} scoped nodes: seconds",
            tenants * 2
        ),
        start.elapsed().as_secs_f64(),
        "s",
    );
    drop(scoped);

    // The same sync on a hub holding only that tenant.
    let alone = Server::start_configured(opts, 100, &[], config);
    let (_, mut readers, client) = run(&alone, true, 1);
    let mut ms1 = Vec::new();
    for _ in 0..5 {
        let mut fresh = client.register_with(
            &format!("fresh-{}", ms1.len()),
            json!({"code": format!("fresh-{}", ms1.len()), "scopes": ["tenant-0000"]}),
        );
        let start = Instant::now();
        assert_eq!(client.drain(&mut fresh), per);
        ms1.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    assert_eq!(client.drain(&mut readers[0]), per);
    ms1.sort_by(|a, b| a.partial_cmp(b).unwrap());
    r.add(
        "scopes_initial_sync_alone_ms",
        "     same on a hub holding that tenant alone: p50",
        ms1[ms1.len() / 2],
        "ms",
    );
}

// ---------------------------------------------------------------------------------------------
// `--only live`: live notification (issue 12)

/// (1) propagation through the node library: node A's daemon syncs A's write at once, the
/// server's event stream wakes node B's daemon, B has it; p50/p99 over 200 edits (20 with
/// `--quick`... at least 50). (2) 1,000 open streams (100 with `--quick`), idle and then with 10
/// writes/s: server RSS and CPU. (3) PostgreSQL only: a write on process 1 reaches a stream on
/// process 2 (p50).
fn live(opts: &Opts, r: &mut Report) {
    live_propagation(opts, r);
    live_streams(opts, r);
    if opts.postgres.is_some() {
        live_two_processes(opts, r);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn live_propagation(opts: &Opts, r: &mut Report) {
    use starsync_node::{DaemonOptions, InitOptions, Node, NodeEvent, NodeOptions};
    let server = Server::start(opts, 100);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = |dir: &Path, code: &str| {
        Node::init_with(
            dir,
            InitOptions::register(&server.base, code).admin_token(ADMIN),
            None,
            NodeOptions::default(),
        )
        .unwrap()
    };
    let (a, b) = (node(da.path(), "live-A"), node(db.path(), "live-B"));
    // Timed syncs an hour apart: only the stream and local writes make either daemon sync.
    let daemon_opts = DaemonOptions {
        interval: Duration::from_secs(3600),
        stream_interval: Duration::from_secs(3600),
        ..DaemonOptions::default()
    };
    let events = b.subscribe();
    let _da = a.spawn_daemon(daemon_opts.clone());
    let _db = b.spawn_daemon(daemon_opts);
    let wait = |what: &str, pick: &dyn Fn(&NodeEvent) -> bool| loop {
        match events.recv_timeout(Duration::from_secs(30)) {
            Ok(e) if pick(&e) => return,
            Ok(_) => {}
            Err(_) => panic!("live: no {what} within 30 s"),
        }
    };
    wait("stream", &|e| {
        matches!(e, NodeEvent::LiveStream { connected: true })
    });
    let edits = (200 / opts.scale).max(50);
    let run = |gap: Duration, first: usize| {
        let mut ms = Vec::with_capacity(edits);
        for i in 0..edits {
            std::thread::sleep(gap);
            let t = Instant::now();
            let (u, _) = a.create("Estimate", &entity(first + i)).unwrap();
            wait("data", &|e| matches!(e, NodeEvent::DataChanged { .. }));
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(b.get("Estimate", &u).unwrap().is_some(), "B has edit {i}");
        }
        ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
        ms
    };
    // Edits 150 ms apart: a stream sends at most one event per 100 ms, so an edit made within
    // 100 ms of the previous event waits out the rest of that window (the second run).
    let ms = run(Duration::from_millis(150), 0);
    println!("(live 1) propagation A writes -> B's daemon has it, {edits} edits 150 ms apart:");
    r.add(
        "live_propagation_p50_ms",
        "  p50",
        percentile(&ms, 0.5),
        "ms",
    );
    r.add(
        "live_propagation_p99_ms",
        "  p99",
        percentile(&ms, 0.99),
        "ms",
    );
    r.add("live_propagation_max_ms", "  max", ms[ms.len() - 1], "ms");
    let ms = run(Duration::ZERO, edits);
    println!("  the same, back to back (each edit as soon as the previous one arrived):");
    r.add(
        "live_propagation_b2b_p50_ms",
        "  p50",
        percentile(&ms, 0.5),
        "ms",
    );
    r.add(
        "live_propagation_b2b_p99_ms",
        "  p99",
        percentile(&ms, 0.99),
        "ms",
    );
}

/// CPU seconds (user + system) a process used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Opens an event stream over a raw socket (nothing read yet).
fn open_stream(base: &str, token: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = base.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /api/sync/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads what is there (non-blocking) and counts `event: pending` lines.
fn drain_events(streams: &mut [std::net::TcpStream], buf: &mut [u8]) -> usize {
    let mut n = 0;
    for s in streams.iter_mut() {
        while let Ok(k) = s.read(buf) {
            if k == 0 {
                break;
            }
            n += buf[..k]
                .windows(14)
                .filter(|w| *w == b"event: pending")
                .count();
        }
    }
    n
}

fn live_streams(opts: &Opts, r: &mut Report) {
    let count = 1000 / opts.scale.min(10);
    let server = Server::start(opts, 100);
    let client = Client::new(&server.base);
    let nodes: Vec<BenchNode> = (0..count)
        .map(|i| client.register(&format!("stream-{i}")))
        .collect();
    let mut writer = client.register("stream-writer");
    let rss_before = vm_rss_mib(server.pid());
    let mut streams: Vec<std::net::TcpStream> = nodes
        .iter()
        .map(|n| open_stream(&server.base, &n.token))
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut connected = 0;
    for s in &streams {
        s.set_nonblocking(true).unwrap();
    }
    while connected < count && Instant::now() < deadline {
        connected += drain_events(&mut streams, &mut buf);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(connected, count, "every stream said pending at connect");
    let rss_open = vm_rss_mib(server.pid());
    println!("(live 2) {count} open event streams:");
    r.add(
        "live_streams_rss_before_mib",
        "  server RSS before",
        rss_before,
        "MiB",
    );
    r.add(
        "live_streams_rss_open_mib",
        "  server RSS with the streams open",
        rss_open,
        "MiB",
    );

    // Idle: nothing happens for 10 s.
    let (cpu0, t0) = (cpu_secs(server.pid()), Instant::now());
    let idle_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < idle_until {
        drain_events(&mut streams, &mut buf);
        std::thread::sleep(Duration::from_millis(200));
    }
    let idle_cpu = (cpu_secs(server.pid()) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    r.add(
        "live_streams_idle_cpu_pct",
        "  server CPU, idle",
        idle_cpu,
        "% of a core",
    );

    // 10 writes/s for 10 s, each one waking every stream.
    let (cpu0, t0) = (cpu_secs(server.pid()), Instant::now());
    let mut delivered = 0;
    for i in 0..100 {
        let next = t0 + Duration::from_millis(100 * (i + 1));
        let body = client.envelope(&writer, &[insert_change(i as usize)]);
        client.exchange_body(&mut writer, &body);
        delivered += drain_events(&mut streams, &mut buf);
        if let Some(left) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
    }
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        delivered += drain_events(&mut streams, &mut buf);
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy_secs = t0.elapsed().as_secs_f64();
    let busy_cpu = (cpu_secs(server.pid()) - cpu0) / busy_secs * 100.0;
    r.add(
        "live_streams_busy_cpu_pct",
        "  server CPU, 10 writes/s",
        busy_cpu,
        "% of a core",
    );
    r.add(
        "live_streams_events_per_s",
        "  pending events delivered",
        delivered as f64 / busy_secs,
        "/s",
    );
    r.add(
        "live_streams_rss_busy_mib",
        "  server RSS after the writes",
        vm_rss_mib(server.pid()),
        "MiB",
    );
}

fn live_two_processes(opts: &Opts, r: &mut Report) {
    use std::io::BufRead;
    let one = Server::start(opts, 100);
    let dir = tempfile::tempdir().unwrap();
    let env: Vec<(&str, &str)> = one
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (mut child, two) = spawn_serve(dir.path(), &one.url, one.batch, &env, "");
    let client = Client::new(&one.base);
    let listener = client.register("listener");
    let mut writer = client.register("writer-2p");
    let stream = open_stream(&two, &listener.token);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("event: pending") && tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("first event");
    let mut ms = Vec::new();
    for i in 0..50 {
        // Past the 100 ms coalescing window, so each write is announced on its own.
        std::thread::sleep(Duration::from_millis(120));
        let body = client.envelope(&writer, &[insert_change(i)]);
        let t = Instant::now();
        client.exchange_body(&mut writer, &body);
        let at = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("event on process 2");
        ms.push(at.duration_since(t).as_secs_f64() * 1000.0);
    }
    let _ = child.kill();
    let _ = child.wait();
    ms.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!("(live 3) PostgreSQL, 2 processes: write on 1 -> event on a stream of 2, 50 writes:");
    r.add(
        "live_two_processes_p50_ms",
        "  p50 (from sending the write)",
        percentile(&ms, 0.5),
        "ms",
    );
    r.add(
        "live_two_processes_p99_ms",
        "  p99",
        percentile(&ms, 0.99),
        "ms",
    );
}

// ---------------------------------------------------------------------------------------------
// `--only peer`: the work of the peer comparison (issue 15), through the node library

/// Figures of the comparison in issue 15 (same machine, loopback, 10,000 records of ~300
/// bytes): starsync before the issue's work, and pouchdb-server with PouchDB. Printed beside
/// this run's figures so the ratio is in front of the reader; the peer was not re-run here.
const PEER_BASELINE: [(&str, &str, f64, f64, &str); 4] = [
    (
        "peer_upload_records_per_s",
        "upload",
        11_100.0,
        2_290.0,
        "records/s",
    ),
    (
        "peer_download_records_per_s",
        "download to a fresh node",
        18_900.0,
        2_400.0,
        "records/s",
    ),
    (
        "peer_fanout_seconds",
        "50 fresh clients x 1,000 records",
        1.46,
        12.1,
        "s",
    ),
    (
        "peer_round_trip_cli_ms",
        "small-sync round trip, CLI",
        22.7,
        46.0,
        "ms",
    ),
];

/// The four phases of the issue's comparison, driven through `starsync_node::Node` in this
/// process (what an embedding desktop program pays: its SQLite writes, outbox marking and
/// packet building included), plus the round trip through the `starsync-node` binary:
/// upload 10,000 records from one node, download them to a fresh node, 50 fresh nodes pulling
/// 1,000 records each at once, and the small-sync round trip (A edits one record and syncs, B
/// syncs and reads it). Local writes happen before timing (a desktop program writes them as the
/// user works); the timed part is `sync()`.
fn peer_phases(opts: &Opts, r: &mut Report) {
    use starsync_node::{InitOptions, Node};
    let n = 10_000 / opts.scale;
    let per_client = 1_000 / opts.scale;
    let clients = 50;
    let dir = tempfile::tempdir().unwrap();
    // Packet size on both sides: the products' defaults unless `STARSYNC_BENCH_PEER_BATCH`
    // says otherwise (to compare packet sizes on the same work).
    let batch: usize = std::env::var("STARSYNC_BENCH_PEER_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(starsync_node::DEFAULT_BATCH_SIZE as usize);
    let init = |server: &Server, code: &str| {
        let mut o = InitOptions::register(&server.base, code).admin_token(ADMIN);
        o.batch_size = batch as i64;
        Node::init(dir.path().join(code), o).unwrap()
    };
    let mut figures = BTreeMap::new();
    let mut peak = 0f64;

    // Upload and download, then the round trip between the same two nodes.
    {
        let server = Server::start(opts, batch);
        let a = init(&server, "peer-a");
        let local = Instant::now();
        let uuids: Vec<String> = (0..n)
            .map(|i| {
                let (uuid, _) = a.create("Estimate", &entity(i)).unwrap();
                uuid
            })
            .collect();
        let local = local.elapsed();
        r.add(
            "peer_local_writes_per_s",
            &format!("(peer) node library: {n} local writes (untimed below): records/s"),
            n as f64 / local.as_secs_f64(),
            "records/s",
        );
        server.reset_peak();
        let t = Instant::now();
        let report = a.sync().unwrap();
        let up = n as f64 / t.elapsed().as_secs_f64();
        assert_eq!(report.sent as usize, n, "every record is uploaded");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        figures.insert("peer_upload_records_per_s", up);

        let b = init(&server, "peer-b");
        let t = Instant::now();
        let report = b.sync().unwrap();
        let down = n as f64 / t.elapsed().as_secs_f64();
        assert_eq!(
            report.received as usize, n,
            "the fresh node receives every record"
        );
        figures.insert("peer_download_records_per_s", down);

        let mut rounds = Vec::new();
        let target = &uuids[0];
        for k in 0..50 {
            let mut data = entity(0);
            data["notes"] = json!(format!("edit {k}"));
            let t = Instant::now();
            a.put("Estimate", target, &data).unwrap();
            a.sync().unwrap();
            b.sync().unwrap();
            let got = b.get("Estimate", target).unwrap().unwrap();
            rounds.push(t.elapsed().as_secs_f64() * 1000.0);
            let got: Value = got.data.parse().unwrap();
            assert_eq!(got["notes"], json!(format!("edit {k}")), "B reads A's edit");
        }
        figures.insert("peer_round_trip_ms", median(&mut rounds));
        if let Some(ms) = cli_round_trip(&server, dir.path(), target) {
            figures.insert("peer_round_trip_cli_ms", ms);
        }
        peak = peak.max(server.peak_rss_mib());
    }

    // 50 fresh nodes each pull the same 1,000 records at once.
    {
        let server = Server::start(opts, batch);
        let w = init(&server, "peer-w");
        for i in 0..per_client {
            w.create("Estimate", &entity(i)).unwrap();
        }
        w.sync().unwrap();
        let nodes: Vec<Node> = (0..clients)
            .map(|i| init(&server, &format!("peer-c{i:02}")))
            .collect();
        server.reset_peak();
        let barrier = std::sync::Barrier::new(clients);
        let t = Instant::now();
        std::thread::scope(|s| {
            for node in &nodes {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let report = node.sync().unwrap();
                    assert_eq!(report.received as usize, per_client);
                });
            }
        });
        figures.insert("peer_fanout_seconds", t.elapsed().as_secs_f64());
        peak = peak.max(server.peak_rss_mib());
    }

    let label = |key: &str| match key {
        "peer_upload_records_per_s" => {
            format!("(peer) upload {n} records from one node: records/s")
        }
        "peer_download_records_per_s" => format!("    download {n} to a fresh node: records/s"),
        "peer_fanout_seconds" => {
            format!("    {clients} fresh nodes pulling {per_client} records each at once: seconds")
        }
        "peer_round_trip_ms" => {
            "    round trip A edits, syncs; B syncs, reads (library): median".into()
        }
        "peer_round_trip_cli_ms" => {
            "    the same round trip with the CLI (4 processes): median".into()
        }
        other => other.into(),
    };
    let unit = |key: &str| match key {
        "peer_fanout_seconds" => "s",
        k if k.ends_with("_ms") => "ms",
        _ => "records/s",
    };
    for key in [
        "peer_upload_records_per_s",
        "peer_download_records_per_s",
        "peer_fanout_seconds",
        "peer_round_trip_ms",
        "peer_round_trip_cli_ms",
    ] {
        if let Some(v) = figures.get(key) {
            r.add(key, &label(key), *v, unit(key));
        }
    }
    r.add(
        "peer_server_peak_rss_mib",
        "    server peak RSS",
        peak,
        "MiB",
    );

    if opts.scale == 1 {
        println!("\n  issue 15's figures (not re-run): starsync before | pouchdb-server | this run | x peer");
        for (key, what, before, pouch, unit) in PEER_BASELINE {
            let now = figures.get(key).copied().unwrap_or(f64::NAN);
            let times = if unit == "records/s" {
                now / pouch
            } else {
                pouch / now
            };
            println!("  {what:<36} {before:>9} | {pouch:>9} | {now:>9.1} {unit} | {times:.1}x");
        }
        println!();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The small-sync round trip through the `starsync-node` binary (put, sync; sync, get), as a
/// script would run it. None (saying why) when the release binary is missing.
fn cli_round_trip(server: &Server, dir: &Path, uuid: &str) -> Option<f64> {
    let node_bin = Path::new(env!("CARGO_BIN_EXE_starsync")).with_file_name("starsync-node");
    if !node_bin.exists() {
        println!(
            "  (peer) CLI round trip skipped: {} is missing (cargo build --release -p \
             starsync-node-cli)",
            node_bin.display()
        );
        return None;
    }
    let run = |data: &Path, args: &[&str]| {
        let out = Command::new(&node_bin)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starsync-node {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let (a, b) = (dir.join("cli-a"), dir.join("cli-b"));
    for (d, code) in [(&a, "peer-cli-a"), (&b, "peer-cli-b")] {
        let d = d.to_str().unwrap();
        run(
            Path::new(d),
            &[
                "init",
                "--server",
                &server.base,
                "--code",
                code,
                "--admin-token",
                ADMIN,
            ],
        );
        run(Path::new(d), &["sync"]);
    }
    let mut rounds = Vec::new();
    for k in 0..20 {
        let mut data = entity(0);
        data["notes"] = json!(format!("cli edit {k}"));
        let t = Instant::now();
        run(&a, &["put", "Estimate", uuid, &data.to_string()]);
        run(&a, &["sync"]);
        run(&b, &["sync"]);
        let out = run(&b, &["--json", "get", "Estimate", uuid]);
        rounds.push(t.elapsed().as_secs_f64() * 1000.0);
        let got: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            got["data"]["notes"],
            json!(format!("cli edit {k}")),
            "{got}"
        );
    }
    Some(median(&mut rounds))
}
