//! Convergence under faults, the node client's most important property.
//!
//! Several library nodes do seeded random inserts, updates and deletes over a small set of
//! entities (so conflicts happen) while a fault-injecting transport drops requests before they
//! reach the server, drops answers after the server applied them, replays old packets (alone,
//! or instead of the real one) and the server restarts mid-run. After a quiet phase without
//! faults, every node must equal the server, and every value any node ever wrote must be in the
//! final state, replaced by a later accepted write, or in `object_version_history`.
//!
//! The transport doubles as the oracle: every request that reached the server and every answer
//! it gave (even the dropped ones) is recorded in order, so the test knows which changes the
//! server applied, which were rejected and which lost a conflict.
//!
//! `STARSYNC_FAULT_SEEDS=N` runs N seeds (default: a CI-sized number); `STARSYNC_FAULT_SEED=S`
//! runs the one seed S (to reproduce a failure).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use starsync_node::{
    HttpTransport, InitOptions, Node, NodeError, NodeOptions, Transport, TransportError,
};
use starsync_protocol::api::{
    ConflictList, ExchangeRequest, ExchangeResponse, NodeStatus, RegisterRequest, RegisterResponse,
    ServerStatus,
};
use starsync_protocol::{decode_hex_packet, Packet};

const DEFAULT_SEEDS: u64 = 24;
const TYPE: &str = "Item";
const ENTITIES: usize = 5;
const NODES: usize = 3;
const STEPS: usize = 140;

/// One change the server applied (a non-duplicate 200 answer), in server order.
#[derive(Debug, Clone)]
struct Applied {
    change_id: String,
    entity_uuid: String,
    op: String,
    token: Option<String>,
    /// `<strategy>:<winner>` when the change met a conflict.
    conflict: Option<String>,
    rejected: bool,
}

#[derive(Default)]
struct Oracle {
    applied: Vec<Applied>,
    /// (node token, packet_no) → the packet_data first sent under that number.
    first_bytes: HashMap<(String, u64), String>,
    /// Every request body per node token (what replays pick from).
    sent: HashMap<String, Vec<String>>,
    faults: HashMap<&'static str, u64>,
}

/// A transport that injects faults and records everything the server saw and said.
struct FaultTransport {
    http: HttpTransport,
    base: RwLock<String>,
    faults_on: AtomicBool,
    /// While set, the "server" is down: every call fails without reaching it.
    down: AtomicBool,
    rng: Mutex<StdRng>,
    oracle: Mutex<Oracle>,
    calls: AtomicU64,
}

impl FaultTransport {
    fn new(base: &str, seed: u64) -> FaultTransport {
        FaultTransport {
            http: HttpTransport::new(Duration::from_secs(30)),
            base: RwLock::new(base.to_string()),
            faults_on: AtomicBool::new(false),
            down: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_fa17)),
            oracle: Mutex::new(Oracle::default()),
            calls: AtomicU64::new(0),
        }
    }

    fn base(&self) -> String {
        self.base.read().clone()
    }

    fn fault(&self, name: &'static str) {
        *self.oracle.lock().faults.entry(name).or_insert(0) += 1;
    }

    fn roll(&self, p: f64) -> bool {
        self.faults_on.load(Ordering::SeqCst) && self.rng.lock().random_bool(p)
    }

    /// Sends one request body to the server and records what the server did with it.
    fn deliver(
        &self,
        token: &str,
        req: &ExchangeRequest,
    ) -> Result<ExchangeResponse, TransportError> {
        let packet =
            decode_hex_packet(&req.packet_data, 1 << 30).expect("node sends valid packets");
        {
            let mut o = self.oracle.lock();
            let key = (token.to_string(), packet.packet_no);
            match o.first_bytes.get(&key) {
                Some(first) => assert_eq!(
                    first, &req.packet_data,
                    "packet {} was resent with different bytes",
                    packet.packet_no
                ),
                None => {
                    o.first_bytes.insert(key, req.packet_data.clone());
                }
            }
            let list = o.sent.entry(token.to_string()).or_default();
            if !list.contains(&req.packet_data) {
                list.push(req.packet_data.clone());
            }
        }
        let result = self.http.exchange(&self.base(), token, req);
        if let Ok(resp) = &result {
            if !resp.duplicate {
                self.record(&packet, resp);
            }
        }
        result
    }

    fn record(&self, packet: &Packet, resp: &ExchangeResponse) {
        let rejected: HashSet<&str> = resp.errors.iter().map(|e| e.change_id.as_str()).collect();
        let conflicts: HashMap<&str, String> = resp
            .conflicts
            .iter()
            .map(|c| (c.change_id.as_str(), c.conflict_resolution.to_string()))
            .collect();
        let mut o = self.oracle.lock();
        for c in &packet.changes {
            let data: Value = serde_json::from_str(c.data_text()).unwrap_or(Value::Null);
            o.applied.push(Applied {
                change_id: c.change_id.clone(),
                entity_uuid: c.entity_uuid.clone(),
                op: c.operation.clone(),
                token: data["w"].as_str().map(str::to_string),
                conflict: conflicts.get(c.change_id.as_str()).cloned(),
                rejected: rejected.contains(c.change_id.as_str()),
            });
        }
    }

    fn random_old_request(&self, token: &str) -> Option<ExchangeRequest> {
        let o = self.oracle.lock();
        let list = o.sent.get(token)?;
        if list.is_empty() {
            return None;
        }
        let i = self.rng.lock().random_range(0..list.len());
        Some(ExchangeRequest {
            packet_data: list[i].clone(),
        })
    }
}

fn net(msg: &str) -> TransportError {
    TransportError::Network(msg.to_string())
}

impl Transport for FaultTransport {
    fn register(
        &self,
        _server: &str,
        admin_token: Option<&str>,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, TransportError> {
        self.http.register(&self.base(), admin_token, req)
    }

    fn exchange(
        &self,
        _server: &str,
        token: &str,
        req: &ExchangeRequest,
    ) -> Result<ExchangeResponse, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            self.fault("server_down");
            return Err(net("connection refused (server down)"));
        }
        if self.roll(0.12) {
            self.fault("drop_request");
            return Err(net("request dropped before reaching the server"));
        }
        if self.roll(0.10) {
            if let Some(old) = self.random_old_request(token) {
                self.fault("replay_before");
                let _ = self.deliver(token, &old);
            }
        }
        if self.roll(0.05) {
            if let Some(old) = self.random_old_request(token) {
                self.fault("replay_instead");
                return self.deliver(token, &old);
            }
        }
        let result = self.deliver(token, req);
        if result.is_ok() && self.roll(0.12) {
            self.fault("drop_response");
            return Err(net("answer lost after the server applied the packet"));
        }
        result
    }

    fn node_status(
        &self,
        _s: &str,
        token: &str,
        node_id: &str,
    ) -> Result<NodeStatus, TransportError> {
        self.http.node_status(&self.base(), token, node_id)
    }

    fn server_status(&self, _s: &str, admin: &str) -> Result<ServerStatus, TransportError> {
        self.http.server_status(&self.base(), admin)
    }

    fn conflicts(
        &self,
        _s: &str,
        token: &str,
        node_id: &str,
    ) -> Result<ConflictList, TransportError> {
        self.http.conflicts(&self.base(), token, node_id)
    }

    fn health(&self, _s: &str) -> Result<(), TransportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(net("connection refused (server down)"));
        }
        self.http.health(&self.base())
    }
}

/// One local write a node made, in test order.
#[derive(Debug, Clone)]
struct Write {
    seq: usize,
    node: usize,
    entity: usize,
    /// None for a delete.
    token: Option<String>,
}

struct Outcome {
    exchanges: u64,
    conflicts: usize,
    restarts: usize,
    faults: HashMap<&'static str, u64>,
}

fn strategy_for(seed: u64) -> &'static str {
    ["server_wins", "client_wins", "timestamp_wins", "manual"][(seed % 4) as usize]
}

fn run_seed(seed: u64) -> Outcome {
    let strategy = strategy_for(seed);
    let mut app = Some(TestApp::spawn_with(
        "",
        &[
            ("STARSYNC_CONFLICT_STRATEGY", strategy),
            ("STARSYNC_BATCH_SIZE", "3"),
        ],
    ));
    let transport = Arc::new(FaultTransport::new(&app.as_ref().unwrap().base, seed));
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let options = NodeOptions {
        retry_base_delay: Duration::from_millis(1),
        retry_max_delay: Duration::from_millis(4),
    };
    let nodes: Vec<Node> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut opts = InitOptions::register("http://ignored.invalid:1", &format!("N{i}"))
                .admin_token(ADMIN);
            opts.max_retries = 2;
            opts.batch_size = 2;
            Node::init_with(d.path(), opts, Some(transport.clone()), options.clone())
                .expect("node registers")
        })
        .collect();
    let uuids: Vec<String> = (0..ENTITIES).map(|_| new_uuid()).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut writes: Vec<Write> = Vec::new();
    let mut restarts = 0;
    let mut down_steps = 0;

    transport.faults_on.store(true, Ordering::SeqCst);
    for step in 0..STEPS {
        if down_steps > 0 {
            down_steps -= 1;
            if down_steps == 0 {
                transport.down.store(false, Ordering::SeqCst);
            }
        }
        let roll: f64 = rng.random();
        if roll < 0.025 {
            // Restart the server (new port), sometimes with a few steps of downtime first.
            let a = app.take().unwrap().restart();
            *transport.base.write() = a.base.clone();
            app = Some(a);
            restarts += 1;
            if rng.random_bool(0.5) {
                transport.down.store(true, Ordering::SeqCst);
                down_steps = rng.random_range(1..6);
            }
            continue;
        }
        let n = rng.random_range(0..NODES);
        let node = &nodes[n];
        if roll < 0.62 {
            let e = rng.random_range(0..ENTITIES);
            let live = node
                .get(TYPE, &uuids[e])
                .unwrap()
                .map(|x| !x.deleted)
                .unwrap_or(false);
            if live && rng.random_bool(0.25) {
                node.delete(TYPE, &uuids[e]).unwrap();
                writes.push(Write {
                    seq: step,
                    node: n,
                    entity: e,
                    token: None,
                });
            } else {
                let token = format!("s{seed}-n{n}-{step}");
                node.put(TYPE, &uuids[e], &json!({"w": token, "step": step, "by": n}))
                    .unwrap();
                writes.push(Write {
                    seq: step,
                    node: n,
                    entity: e,
                    token: Some(token),
                });
            }
        } else {
            match node.sync() {
                Ok(_) => {}
                Err(NodeError::Unreachable { .. }) => {}
                Err(e) => panic!("seed {seed}: node {n} sync failed unexpectedly: {e}"),
            }
        }
    }

    // Quiet phase: no faults; sync every node until a whole round moves nothing.
    transport.faults_on.store(false, Ordering::SeqCst);
    transport.down.store(false, Ordering::SeqCst);
    let mut quiet = false;
    for _round in 0..12 {
        let mut moved = 0;
        for (i, node) in nodes.iter().enumerate() {
            let r = node
                .sync()
                .unwrap_or_else(|e| panic!("seed {seed}: quiet sync of node {i} failed: {e}"));
            moved += r.sent + r.received + r.kept_local;
        }
        if moved == 0 {
            quiet = true;
            break;
        }
    }
    assert!(quiet, "seed {seed}: nodes never went quiet");

    let app = app.unwrap();
    check_converged(seed, &app, &nodes, &uuids);
    let conflicts = check_nothing_lost(seed, &app, &transport, &uuids, &writes);
    let o = transport.oracle.lock();
    Outcome {
        exchanges: transport.calls.load(Ordering::SeqCst),
        conflicts,
        restarts,
        faults: o.faults.clone(),
    }
}

/// Every node equals the server: same live entities with the same data, nothing queued.
fn check_converged(seed: u64, app: &TestApp, nodes: &[Node], uuids: &[String]) {
    for (i, node) in nodes.iter().enumerate() {
        let s = node.status().unwrap();
        assert_eq!(
            (s.pending, s.in_flight, s.failed, s.stored_packets),
            (0, 0, 0, 0),
            "seed {seed}: node {i} still has outbox work: {s:?}"
        );
    }
    for u in uuids {
        let (status, body) = app.entity(TYPE, u);
        let server: Option<Value> = match status {
            404 => None,
            200 if body["deleted"] == json!(true) => None,
            200 => Some(body["data"].clone()),
            _ => panic!("seed {seed}: entity {u}: {status} {body}"),
        };
        for (i, node) in nodes.iter().enumerate() {
            let local = node
                .get(TYPE, u)
                .unwrap()
                .filter(|e| !e.deleted)
                .map(|e| e.data.to_value());
            assert_eq!(
                local, server,
                "seed {seed}: node {i} differs from the server on {u}"
            );
        }
    }
}

/// Every value written is in the final state, replaced by a later accepted write, or in the
/// history. Returns the number of conflicts the server reported.
fn check_nothing_lost(
    seed: u64,
    app: &TestApp,
    transport: &FaultTransport,
    uuids: &[String],
    writes: &[Write],
) -> usize {
    let oracle = transport.oracle.lock();
    let mut conflicts = 0;
    for (e, u) in uuids.iter().enumerate() {
        let (status, body) = app.entity(TYPE, u);
        let final_token = if status == 200 && body["deleted"] != json!(true) {
            body["data"]["w"].as_str().map(str::to_string)
        } else {
            None
        };
        let final_deleted = status == 404 || body["deleted"] == json!(true);
        let rows = app.conflicts(&format!("?entity_uuid={u}&limit=1000"));
        let history: HashSet<String> = rows
            .iter()
            .filter_map(|r| r["serialized_data"]["w"].as_str().map(str::to_string))
            .collect();
        let history_changes: HashSet<&str> = rows
            .iter()
            .filter_map(|r| r["change_id"].as_str())
            .collect();
        let applied: Vec<&Applied> = oracle
            .applied
            .iter()
            .filter(|a| &a.entity_uuid == u)
            .collect();
        conflicts += applied.iter().filter(|a| a.conflict.is_some()).count();
        let accepted = |a: &Applied| {
            !a.rejected
                && a.conflict
                    .as_deref()
                    .map(|c| c.ends_with(":client"))
                    .unwrap_or(true)
        };
        for a in &applied {
            assert!(!a.rejected, "seed {seed}: the server rejected {a:?}");
            // Every conflict is one history row, found by the change that met it.
            if a.conflict.is_some() {
                assert!(
                    history_changes.contains(a.change_id.as_str()),
                    "seed {seed}: conflict of {a:?} has no history row"
                );
            }
            // A lost update must be in the history (a lost change is never silent).
            if !accepted(a) {
                if let Some(t) = &a.token {
                    assert!(
                        history.contains(t),
                        "seed {seed}: change {a:?} lost a conflict but is not in the history"
                    );
                }
            }
        }
        for w in writes.iter().filter(|w| w.entity == e) {
            let pos = applied.iter().position(|a| match (&w.token, &a.token) {
                (Some(t), Some(at)) => t == at,
                _ => false,
            });
            let ok = match &w.token {
                Some(t) if final_token.as_deref() == Some(t.as_str()) => true,
                Some(t) if history.contains(t) => true,
                Some(_) => match pos {
                    // Sent and accepted: a later accepted change replaced it normally.
                    Some(p) => applied[p + 1..].iter().any(|a| accepted(a)),
                    // Never sent: replaced in the outbox by a later write of the same node.
                    None => writes
                        .iter()
                        .any(|x| x.entity == e && x.node == w.node && x.seq > w.seq),
                },
                None => {
                    final_deleted
                        || writes
                            .iter()
                            .any(|x| x.entity == e && x.node == w.node && x.seq > w.seq)
                        || applied.iter().any(|a| a.op == "DELETE")
                            && applied
                                .iter()
                                .rposition(|a| a.op == "DELETE")
                                .map(|p| applied[p + 1..].iter().any(|a| accepted(a)))
                                .unwrap_or(false)
                }
            };
            assert!(
                ok,
                "seed {seed}: write {w:?} was lost silently (final {final_token:?}, history {history:?})"
            );
        }
    }
    conflicts
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("STARSYNC_FAULT_SEED") {
        return vec![s.trim().parse().expect("STARSYNC_FAULT_SEED is a number")];
    }
    let n = std::env::var("STARSYNC_FAULT_SEEDS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    (1..=n).collect()
}

#[test]
fn nodes_converge_under_faults() {
    let started = Instant::now();
    let seeds = seeds();
    let mut totals: HashMap<&'static str, u64> = HashMap::new();
    let (mut exchanges, mut conflicts, mut restarts) = (0, 0, 0);
    for &seed in &seeds {
        let t = Instant::now();
        let o = run_seed(seed);
        eprintln!(
            "seed {seed} ({}): {} exchange calls, {} conflicts, {} restarts, faults {:?} in {:.1}s",
            strategy_for(seed),
            o.exchanges,
            o.conflicts,
            o.restarts,
            o.faults,
            t.elapsed().as_secs_f64()
        );
        exchanges += o.exchanges;
        conflicts += o.conflicts;
        restarts += o.restarts;
        for (k, v) in o.faults {
            *totals.entry(k).or_insert(0) += v;
        }
    }
    eprintln!(
        "fault runs: {} seeds passed in {:.1}s ({exchanges} exchange calls, {conflicts} conflicts, {restarts} restarts, faults {totals:?})",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if seeds.len() >= 4 {
        // The run must actually have exercised what it claims to.
        assert!(conflicts > 0, "no conflicts happened");
        assert!(restarts > 0, "the server never restarted");
        for f in [
            "drop_request",
            "drop_response",
            "replay_before",
            "replay_instead",
        ] {
            assert!(
                totals.get(f).copied().unwrap_or(0) > 0,
                "fault {f} never happened"
            );
        }
    }
}

/// Forwards to the server, except that the first exchange carries a later stored packet
/// (as if a proxy reordered them), so the server answers `packet_gap`.
struct ReorderOnce {
    http: HttpTransport,
    swap_in: Mutex<Option<String>>,
    sent: Mutex<Vec<String>>,
}

impl Transport for ReorderOnce {
    fn register(
        &self,
        s: &str,
        admin: Option<&str>,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, TransportError> {
        self.http.register(s, admin, req)
    }
    fn exchange(
        &self,
        s: &str,
        token: &str,
        req: &ExchangeRequest,
    ) -> Result<ExchangeResponse, TransportError> {
        let req = match self.swap_in.lock().take() {
            Some(hex) => ExchangeRequest { packet_data: hex },
            None => req.clone(),
        };
        self.sent.lock().push(req.packet_data.clone());
        self.http.exchange(s, token, &req)
    }
    fn node_status(&self, s: &str, t: &str, id: &str) -> Result<NodeStatus, TransportError> {
        self.http.node_status(s, t, id)
    }
    fn server_status(&self, s: &str, a: &str) -> Result<ServerStatus, TransportError> {
        self.http.server_status(s, a)
    }
    fn conflicts(&self, s: &str, t: &str, id: &str) -> Result<ConflictList, TransportError> {
        self.http.conflicts(s, t, id)
    }
    fn health(&self, s: &str) -> Result<(), TransportError> {
        self.http.health(s)
    }
}

#[test]
fn packet_gap_is_recovered_by_resending_stored_packets_from_the_expected_number() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(ReorderOnce {
        http: HttpTransport::new(Duration::from_secs(30)),
        swap_in: Mutex::new(None),
        sent: Mutex::new(Vec::new()),
    });
    let mut opts = InitOptions::register(&app.base, "GAP").admin_token(ADMIN);
    opts.batch_size = 1;
    let node = Node::init_with(
        dir.path(),
        opts,
        Some(transport.clone()),
        NodeOptions::default(),
    )
    .unwrap();
    let uuids: Vec<String> = (0..3)
        .map(|i| node.create(TYPE, &json!({"i": i})).unwrap().0)
        .collect();
    // Three stored packets (one change each); the server gets only the first, by file.
    let out = tempfile::tempdir().unwrap();
    let report = node.export(out.path()).unwrap();
    assert_eq!(report.files.len(), 3);
    let file = |i: usize| std::fs::read(&report.files[i].file).unwrap();
    let one_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        one_dir.path().join("GAP-to-server-00000001.syncpkt"),
        file(0),
    )
    .unwrap();
    let o = app.cli(&["import", one_dir.path().to_str().unwrap()]);
    assert!(o.status.success());

    // The first exchange carries packet 3: the server expects 2.
    *transport.swap_in.lock() = Some(hex::encode(file(2)));
    let r = node.sync().unwrap();
    assert_eq!(r.gaps_recovered, 1, "{r:?}");
    let sent = transport.sent.lock().clone();
    assert_eq!(sent[0], hex::encode(file(2)));
    // Resent from the expected number, byte for byte: packet 2, then packet 3.
    assert_eq!(sent[1], hex::encode(file(1)));
    assert_eq!(sent[2], hex::encode(file(2)));
    for u in &uuids {
        assert_eq!(app.entity(TYPE, u).0, 200);
    }
    let s = node.status().unwrap();
    assert_eq!(
        (s.in_flight, s.stored_packets, s.server_acked_packet_no),
        (0, 0, 3)
    );
}
