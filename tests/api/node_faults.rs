//! Convergence under faults, the node client's most important property.
//!
//! Several library nodes do seeded random inserts, updates and deletes over a small set of
//! entities (so conflicts happen) against two servers on one database: the in-process test
//! server and a `starsync serve` process. A fault-injecting transport drops requests before they
//! reach a server, drops answers after the server applied them, replays old packets (alone, or
//! instead of the real one) and `kill -9`s the server process while an exchange is in flight
//! (a new one takes its place); the in-process server also restarts cleanly, sometimes with a
//! few steps of downtime. After a quiet phase without faults every node must equal the server,
//! and every write and delete is accounted for by its change_id (see [`check_accounting`]).
//!
//! The transport doubles as the oracle: every request that reached a server and every answer it
//! gave (even the dropped ones) is recorded in server order, so the test knows which changes the
//! server applied, which were rejected and which lost a conflict. Right after a kill the
//! transport sends the cut request again to the new process, as the node's retry would: a
//! duplicate answer says the dead process had committed it, a normal answer that it had not.
//!
//! A real server error (5xx), a packet applied twice, an answer to a replay that is neither a
//! duplicate nor a gap, or a network error nobody injected fails the run at once.
//!
//! `STARSYNC_FAULT_SEEDS=N` (N ≥ 1) runs seeds 1..=N (default: [`DEFAULT_SEEDS`]);
//! `STARSYNC_FAULT_SEED=S` runs the one seed S (to reproduce a failure). Every run, of any
//! size, checks that each kind of fault actually happened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use starsync_node::{
    HttpTransport, InitOptions, Node, NodeError, NodeOptions, QueuedChange, Transport,
    TransportError,
};
use starsync_protocol::api::{
    ConflictList, ErrorBody, ExchangeRequest, ExchangeResponse, NodeStatus, RegisterRequest,
    RegisterResponse, ServerStatus,
};
use starsync_protocol::{decode_hex_packet, ErrorCode, Packet, Resolution, Winner};

/// Seeds per run by default: CI runs this many on each backend.
const DEFAULT_SEEDS: u64 = 24;
const TYPE: &str = "Item";
const ENTITIES: usize = 5;
const NODES: usize = 3;
const STEPS: usize = 140;

/// Fault kinds every run must have exercised (counted where the fault really took effect).
const REQUIRED_FAULTS: [&str; 6] = [
    DROP_REQUEST,
    DROP_RESPONSE,
    REPLAY_BEFORE,
    REPLAY_INSTEAD,
    KILL9_MID_EXCHANGE,
    CLEAN_RESTART,
];
const DROP_REQUEST: &str = "drop_request";
const DROP_RESPONSE: &str = "drop_response";
const REPLAY_BEFORE: &str = "replay_before";
const REPLAY_INSTEAD: &str = "replay_instead";
/// The server process was killed while the exchange was in flight (no answer came back).
const KILL9_MID_EXCHANGE: &str = "kill9_mid_exchange";
/// ...and the dead process had committed the packet (learned from the duplicate answer).
const KILL9_COMMITTED_UNANSWERED: &str = "kill9_committed_unanswered";
/// The kill came after the answer.
const KILL9_AFTER_ANSWER: &str = "kill9_after_answer";
const CLEAN_RESTART: &str = "clean_restart";
const SERVER_DOWN: &str = "server_down";
const REPLAY_DUPLICATE: &str = "replay_answered_duplicate";
const REPLAY_GAP: &str = "replay_answered_gap";
/// A node's own packet answered `packet_gap` (after a replay took its place).
const GAP: &str = "packet_gap";

/// Fault kinds the transport forces once per seed if chance has not produced them by then
/// (so a one-seed run still checks them all). Call numbers count exchange calls.
const FORCE_BY_CALL: [(&str, u64); 5] = [
    (DROP_REQUEST, 20),
    (DROP_RESPONSE, 30),
    (REPLAY_BEFORE, 40),
    (REPLAY_INSTEAD, 50),
    (KILL9_MID_EXCHANGE, 60),
];

/// One change the server applied, in server order.
#[derive(Debug, Clone)]
struct Applied {
    change_id: String,
    entity_uuid: String,
    op: String,
    token: Option<String>,
    conflict: Option<Resolution>,
    rejected: bool,
}

#[derive(Default)]
struct Oracle {
    /// The changes of each packet the server applied, in server order.
    order: Vec<Vec<Applied>>,
    /// (node token, packet_no) of every packet the server applied.
    packets: HashSet<(String, u64)>,
    /// Every change_id that reached a server in some request.
    delivered: HashSet<String>,
    /// (node token, packet_no) → the packet_data first sent under that number.
    first_bytes: HashMap<(String, u64), String>,
    /// Every request body per node token (what replays pick from).
    sent: HashMap<String, Vec<String>>,
    faults: BTreeMap<&'static str, u64>,
    /// Entity states the server sent to nodes: (uuid, version, data token or None = deleted).
    served: Vec<(String, u64, Option<String>)>,
}

/// How a request was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sent {
    /// The node's own request.
    Normal,
    /// An old request sent again by the transport.
    Replay,
    /// The node's request sent again right after the process it went to was killed.
    AfterKill,
}

enum Outcome {
    Answer(ExchangeResponse),
    Status(u16, Option<ErrorBody>, String),
    /// No answer: refused, reset, or cut mid-answer.
    NoAnswer(String),
}

/// The servers the transport talks to.
struct Servers {
    /// The in-process test server (changes port when it restarts).
    app_base: String,
    spec: ProcessSpec,
    process: ServerProcess,
}

/// A transport that injects faults and records everything the servers saw and said.
struct FaultTransport {
    seed: u64,
    http: HttpTransport,
    agent: ureq::Agent,
    servers: Mutex<Servers>,
    faults_on: AtomicBool,
    /// While set, the servers are "down": every call fails without reaching them.
    down: AtomicBool,
    rng: Mutex<StdRng>,
    oracle: Mutex<Oracle>,
    calls: AtomicU64,
    /// Recent exchange time with the process, in µs: kills land within it.
    exchange_us: AtomicU64,
}

impl FaultTransport {
    fn new(app: &TestApp, seed: u64) -> FaultTransport {
        let spec = ProcessSpec::of(app);
        FaultTransport {
            seed,
            http: HttpTransport::new(Duration::from_secs(30)),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            servers: Mutex::new(Servers {
                app_base: app.base.clone(),
                process: ServerProcess::spawn_spec(&spec),
                spec,
            }),
            faults_on: AtomicBool::new(false),
            down: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_fa17)),
            oracle: Mutex::new(Oracle::default()),
            calls: AtomicU64::new(0),
            exchange_us: AtomicU64::new(5_000),
        }
    }

    fn app_base(&self) -> String {
        self.servers.lock().app_base.clone()
    }

    fn count(&self, name: &'static str) {
        *self.oracle.lock().faults.entry(name).or_insert(0) += 1;
    }

    fn happened(&self, name: &str) -> bool {
        self.oracle.lock().faults.get(name).copied().unwrap_or(0) > 0
    }

    /// A fault with probability `p`, or forced when its call number has come and it has not
    /// happened yet.
    fn roll(&self, name: &'static str, p: f64, call: u64) -> bool {
        if !self.faults_on.load(Ordering::SeqCst) {
            return false;
        }
        let forced = FORCE_BY_CALL
            .iter()
            .any(|(n, by)| *n == name && call >= *by && !self.happened(name));
        forced || self.rng.lock().random_bool(p)
    }

    fn fail(&self, msg: String) -> ! {
        panic!("seed {}: {msg}", self.seed)
    }

    fn post(&self, base: &str, token: &str, body: &[u8]) -> Outcome {
        let r = self
            .agent
            .post(&format!("{base}/api/sync/exchange"))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json")
            .send_bytes(body);
        match r {
            Ok(resp) => match serde_json::from_reader::<_, ExchangeResponse>(resp.into_reader()) {
                Ok(a) => Outcome::Answer(a),
                Err(e) => Outcome::NoAnswer(format!("answer cut off: {e}")),
            },
            Err(ureq::Error::Status(s, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                Outcome::Status(s, serde_json::from_str(&text).ok(), text)
            }
            Err(ureq::Error::Transport(t)) => Outcome::NoAnswer(t.to_string()),
        }
    }

    /// Sends one request to a server (`kill`: and `kill -9`s the process meanwhile), records
    /// what the server did with it and checks the answer. `replay`: an old request sent again.
    fn deliver(
        &self,
        token: &str,
        req: &ExchangeRequest,
        replay: bool,
        to_process: bool,
        kill: bool,
    ) -> Result<ExchangeResponse, TransportError> {
        let packet =
            decode_hex_packet(&req.packet_data, 1 << 30).expect("node sends valid packets");
        let key = (token.to_string(), packet.packet_no);
        {
            let mut o = self.oracle.lock();
            match o.first_bytes.get(&key) {
                Some(first) if first != &req.packet_data => self.fail(format!(
                    "packet {} was resent with different bytes",
                    packet.packet_no
                )),
                Some(_) => {}
                None => {
                    o.first_bytes.insert(key.clone(), req.packet_data.clone());
                }
            }
            let list = o.sent.entry(token.to_string()).or_default();
            if !list.contains(&req.packet_data) {
                list.push(req.packet_data.clone());
            }
            for c in &packet.changes {
                o.delivered.insert(c.change_id.clone());
            }
        }
        let body = serde_json::to_vec(req).unwrap();
        let mut servers = self.servers.lock();
        let outcome = if !to_process {
            self.post(&servers.app_base, token, &body)
        } else if !kill {
            let t = Instant::now();
            let out = self.post(&servers.process.base, token, &body);
            let us = t.elapsed().as_micros() as u64;
            let avg = self.exchange_us.load(Ordering::SeqCst);
            self.exchange_us.store((avg * 7 + us) / 8, Ordering::SeqCst);
            out
        } else {
            // The kill lands anywhere from before the server reads the request to after it
            // answered (spread over 1.5 recent exchange times), half the time late in the
            // exchange, where the server may have committed but not yet answered.
            let avg = self.exchange_us.load(Ordering::SeqCst);
            let delay = {
                let mut rng = self.rng.lock();
                let us = if rng.random_bool(0.5) {
                    rng.random_range(0..=avg * 3 / 2)
                } else {
                    rng.random_range(avg * 6 / 10..=avg)
                };
                Duration::from_micros(us)
            };
            let base = servers.process.base.clone();
            let out = std::thread::scope(|s| {
                let h = s.spawn(|| self.post(&base, token, &body));
                std::thread::sleep(delay);
                servers.process.kill9();
                h.join().unwrap()
            });
            servers.process = ServerProcess::spawn_spec(&servers.spec);
            out
        };
        drop(servers);
        match outcome {
            Outcome::Answer(resp) => {
                if kill {
                    self.count(KILL9_AFTER_ANSWER);
                }
                let how = if replay { Sent::Replay } else { Sent::Normal };
                self.record(&key, &packet, &resp, how);
                Ok(resp)
            }
            Outcome::Status(409, Some(body), _) if body.error == ErrorCode::PacketGap => {
                self.check_gap(token, &packet, &body);
                self.count(if replay { REPLAY_GAP } else { GAP });
                Err(TransportError::Http { status: 409, body })
            }
            Outcome::Status(status, _, text) if status >= 500 => self.fail(format!(
                "the server answered {status} to packet {}: {text}",
                packet.packet_no
            )),
            Outcome::Status(status, _, text) => self.fail(format!(
                "the server refused packet {} with {status}: {text}",
                packet.packet_no
            )),
            Outcome::NoAnswer(msg) if kill => {
                self.count(KILL9_MID_EXCHANGE);
                // Did the dead process commit it? Send the same bytes to the new process at
                // once, as the node's retry would: a duplicate answer says it did (and repeats
                // the report), a normal answer applies it now. Either way the oracle knows the
                // packet's place in the server's order, and the node's own retry later gets a
                // duplicate (its answer is lost, like a dropped answer).
                let base = self.servers.lock().process.base.clone();
                match self.post(&base, token, &body) {
                    Outcome::Answer(resp) => self.record(&key, &packet, &resp, Sent::AfterKill),
                    Outcome::Status(s, _, text) => self.fail(format!(
                        "resending packet {} after a kill: {s} {text}",
                        packet.packet_no
                    )),
                    Outcome::NoAnswer(m) => self.fail(format!(
                        "resending packet {} after a kill: no answer: {m}",
                        packet.packet_no
                    )),
                }
                Err(TransportError::Network(format!(
                    "server killed mid-exchange: {msg}"
                )))
            }
            Outcome::NoAnswer(msg) => self.fail(format!(
                "no answer to packet {} without any injected fault: {msg}",
                packet.packet_no
            )),
        }
    }

    /// Records a 200 answer in server order; fails on a packet applied twice, a replay not
    /// answered as a duplicate, or a duplicate of a packet never applied (unless the process
    /// that got it first was killed before it answered).
    fn record(&self, key: &(String, u64), packet: &Packet, resp: &ExchangeResponse, how: Sent) {
        let mut o = self.oracle.lock();
        let known = o.packets.contains(key);
        match (resp.duplicate, known, how) {
            (false, false, Sent::Normal | Sent::AfterKill) => {
                o.order.push(applied_changes(packet, resp));
                o.packets.insert(key.clone());
            }
            (false, true, _) => self.fail(format!(
                "packet {} was applied twice (second answer {resp:?})",
                key.1
            )),
            (false, false, Sent::Replay) => self.fail(format!(
                "a replay of packet {} was applied as new: {resp:?}",
                key.1
            )),
            (true, true, how) => {
                if how == Sent::Replay {
                    *o.faults.entry(REPLAY_DUPLICATE).or_insert(0) += 1;
                }
            }
            (true, false, Sent::AfterKill) => {
                // The killed process committed it and died before answering; the duplicate
                // answer repeats that exchange's report.
                o.order.push(applied_changes(packet, resp));
                o.packets.insert(key.clone());
                *o.faults.entry(KILL9_COMMITTED_UNANSWERED).or_insert(0) += 1;
            }
            (true, false, _) => self.fail(format!(
                "packet {} answered as a duplicate, but no exchange of it ever reached a server",
                key.1
            )),
        }
        // The entity states this answer carries.
        let answer = decode_hex_packet(&resp.packet_data, 1 << 30).expect("server packet");
        for c in &answer.changes {
            let token = (c.operation != "DELETE")
                .then(|| {
                    serde_json::from_str::<Value>(c.data_text()).unwrap()["w"]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten();
            o.served
                .push((c.entity_uuid.clone(), c.version.unwrap_or(0), token));
        }
    }

    /// A `packet_gap` answer must be true: the packet is ahead of the next one the server
    /// expects, and the oracle knows of no packet from there on that the server applied.
    /// (A node meets gaps when a replay sent instead of its packet made it believe the packet
    /// was applied.)
    fn check_gap(&self, token: &str, packet: &Packet, body: &ErrorBody) {
        let Some(expected) = body.expected_packet_no else {
            self.fail(format!("packet_gap without expected_packet_no: {body:?}"));
        };
        if expected >= packet.packet_no {
            self.fail(format!(
                "packet {} answered packet_gap expecting {expected}",
                packet.packet_no
            ));
        }
        let o = self.oracle.lock();
        if let Some((_, no)) = o
            .packets
            .iter()
            .find(|(t, no)| t == token && *no >= expected)
        {
            self.fail(format!(
                "the server expects packet {expected} but had applied packet {no} of this node"
            ));
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

/// The changes of a packet as the server's answer reports them.
fn applied_changes(packet: &Packet, resp: &ExchangeResponse) -> Vec<Applied> {
    let rejected: HashSet<&str> = resp.errors.iter().map(|e| e.change_id.as_str()).collect();
    let conflicts: HashMap<&str, Resolution> = resp
        .conflicts
        .iter()
        .map(|c| (c.change_id.as_str(), c.conflict_resolution))
        .collect();
    packet
        .changes
        .iter()
        .map(|c| {
            let data: Value = serde_json::from_str(c.data_text()).unwrap_or(Value::Null);
            Applied {
                change_id: c.change_id.clone(),
                entity_uuid: c.entity_uuid.clone(),
                op: c.operation.clone(),
                token: data["w"].as_str().map(str::to_string),
                conflict: conflicts.get(c.change_id.as_str()).copied(),
                rejected: rejected.contains(c.change_id.as_str()),
            }
        })
        .collect()
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
        self.http.register(&self.app_base(), admin_token, req)
    }

    fn exchange(
        &self,
        _server: &str,
        token: &str,
        req: &ExchangeRequest,
    ) -> Result<ExchangeResponse, TransportError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            self.count(SERVER_DOWN);
            return Err(net("connection refused (server down)"));
        }
        // Half the exchanges go to the process, half to the in-process server.
        let to_process = self.rng.lock().random_bool(0.5);
        if self.roll(DROP_REQUEST, 0.12, call) {
            self.count(DROP_REQUEST);
            return Err(net("request dropped before reaching the server"));
        }
        if self.roll(REPLAY_BEFORE, 0.10, call) {
            if let Some(old) = self.random_old_request(token) {
                self.count(REPLAY_BEFORE);
                // Its answer goes nowhere, but it is checked (a duplicate, or a gap).
                let _ = self.deliver(token, &old, true, to_process, false);
            }
        }
        if self.roll(REPLAY_INSTEAD, 0.05, call) {
            if let Some(old) = self.random_old_request(token) {
                self.count(REPLAY_INSTEAD);
                return self.deliver(token, &old, true, to_process, false);
            }
        }
        let kill = to_process && self.roll(KILL9_MID_EXCHANGE, 0.03, call);
        let result = self.deliver(token, req, false, to_process, kill);
        if result.is_ok() && self.roll(DROP_RESPONSE, 0.12, call) {
            self.count(DROP_RESPONSE);
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
        self.http.node_status(&self.app_base(), token, node_id)
    }

    fn server_status(&self, _s: &str, admin: &str) -> Result<ServerStatus, TransportError> {
        self.http.server_status(&self.app_base(), admin)
    }

    fn conflicts(
        &self,
        _s: &str,
        token: &str,
        node_id: &str,
    ) -> Result<ConflictList, TransportError> {
        self.http.conflicts(&self.app_base(), token, node_id)
    }

    fn health(&self, _s: &str) -> Result<(), TransportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(net("connection refused (server down)"));
        }
        self.http.health(&self.app_base())
    }
}

/// One local write a node made, in test order.
#[derive(Debug, Clone)]
struct Write {
    /// Shown in failure messages.
    #[allow(dead_code)]
    step: usize,
    node: usize,
    entity: usize,
    change_id: String,
    /// None for a delete.
    token: Option<String>,
    /// This write replaced the node's still-pending change of the entity in its outbox.
    replaced_pending: bool,
}

impl Write {
    fn new(
        step: usize,
        node: usize,
        entity: usize,
        q: QueuedChange,
        token: Option<String>,
    ) -> Write {
        Write {
            step,
            node,
            entity,
            change_id: q.change_id,
            token,
            replaced_pending: q.replaced_pending,
        }
    }
}

struct SeedReport {
    exchanges: u64,
    conflicts: usize,
    faults: BTreeMap<&'static str, u64>,
}

fn strategy_for(seed: u64) -> &'static str {
    ["server_wins", "client_wins", "timestamp_wins", "manual"][(seed % 4) as usize]
}

fn run_seed(seed: u64) -> SeedReport {
    let strategy = strategy_for(seed);
    let mut app = Some(TestApp::spawn_with(
        "",
        &[
            ("STARSYNC_CONFLICT_STRATEGY", strategy),
            ("STARSYNC_BATCH_SIZE", "3"),
        ],
    ));
    let transport = Arc::new(FaultTransport::new(app.as_ref().unwrap(), seed));
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
    let mut down_steps = 0;
    // One clean restart at least, at a seeded step, if chance has not made one by then.
    let restart_by = rng.random_range(30..100);

    transport.faults_on.store(true, Ordering::SeqCst);
    for step in 0..STEPS {
        if down_steps > 0 {
            down_steps -= 1;
            if down_steps == 0 {
                transport.down.store(false, Ordering::SeqCst);
            }
        }
        let roll: f64 = rng.random();
        if roll < 0.025 || (step == restart_by && !transport.happened(CLEAN_RESTART)) {
            // Restart the in-process server cleanly (new port), sometimes with a few steps of
            // downtime first.
            let a = app.take().unwrap().restart();
            transport.servers.lock().app_base = a.base.clone();
            app = Some(a);
            transport.count(CLEAN_RESTART);
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
                let q = node
                    .delete(TYPE, &uuids[e])
                    .unwrap()
                    .expect("a live entity's delete is queued");
                writes.push(Write::new(step, n, e, q, None));
            } else {
                let token = format!("s{seed}-n{n}-{step}");
                // Every write changes every field (the token names the writer), so a concurrent
                // write always overlaps all the fields a change names: the field-level rule
                // (PROTOCOL §5.1) decides exactly as the whole-document rule this replay models.
                let q = node
                    .put(TYPE, &uuids[e], &json!({"w": token, "step": step}))
                    .unwrap();
                writes.push(Write::new(step, n, e, q, Some(token)));
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
    let conflicts = check_accounting(seed, &app, &transport, &uuids, &writes);
    let o = transport.oracle.lock();
    SeedReport {
        exchanges: transport.calls.load(Ordering::SeqCst),
        conflicts,
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

/// An entity's state in the replay of the server's apply order.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Absent,
    Live(Option<String>),
    Deleted,
}

/// What applying one change did, in the replay.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Effect {
    /// It became the entity's state (a new version).
    NewVersion,
    /// It lost a conflict: the server kept its state, the change is in the history.
    LostConflict,
    /// A delete of an entity already deleted (or never created): nothing to do.
    NoOpDelete,
}

/// Accounts for every write and delete by its change_id, and checks the server's apply order
/// against the server's state. Returns the number of conflicts.
///
/// - Exactly once: each change that reached a server was applied exactly once (a packet
///   applied twice fails in the transport already), none was rejected.
/// - Replaying the apply order (a new version per accepted change; a lost conflict changes
///   nothing; deleting a deleted entity changes nothing) gives each entity's final version,
///   deleted flag and data, and every version the server sent to a node.
/// - Every conflict has exactly one history row, found by its change_id, holding a losing
///   update's data; no other rows exist.
/// - Every write is (a) replaced in its node's outbox, while still pending, by the node's next
///   write of the entity — then it never reached a server — or (b) applied once, and there it
///   became a version of the entity, or lost a conflict and is in the history, or was a delete
///   of an entity already deleted.
fn check_accounting(
    seed: u64,
    app: &TestApp,
    transport: &FaultTransport,
    uuids: &[String],
    writes: &[Write],
) -> usize {
    let oracle = transport.oracle.lock();
    let applied: Vec<&Applied> = oracle.order.iter().flatten().collect();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for a in &applied {
        *times.entry(a.change_id.as_str()).or_insert(0) += 1;
        assert!(!a.rejected, "seed {seed}: the server rejected {a:?}");
    }
    for (id, n) in &times {
        assert_eq!(*n, 1, "seed {seed}: change {id} applied {n} times");
    }
    for id in &oracle.delivered {
        assert!(
            times.contains_key(id.as_str()),
            "seed {seed}: change {id} reached a server but was never applied"
        );
    }

    // Replay the apply order per entity.
    let mut effect: HashMap<&str, Effect> = HashMap::new();
    let mut conflicts = 0;
    for u in uuids {
        let mut state = State::Absent;
        let mut version = 0u64;
        let mut versions: HashMap<u64, State> = HashMap::new();
        let mut lost: Vec<&Applied> = Vec::new();
        // Conflicts the node's change won, with the state it overwrote.
        let mut overwrote: Vec<(&Applied, State)> = Vec::new();
        for a in applied.iter().filter(|a| &a.entity_uuid == u) {
            let wins = a
                .conflict
                .map(|r| r.winner == Winner::Client)
                .unwrap_or(true);
            if wins && a.conflict.is_some() {
                overwrote.push((a, state.clone()));
            }
            let e = if !wins {
                lost.push(a);
                Effect::LostConflict
            } else if a.op == "DELETE" {
                if matches!(state, State::Live(_)) {
                    state = State::Deleted;
                    version += 1;
                    Effect::NewVersion
                } else {
                    Effect::NoOpDelete
                }
            } else {
                state = State::Live(a.token.clone());
                version += 1;
                Effect::NewVersion
            };
            if e == Effect::NewVersion {
                versions.insert(version, state.clone());
            }
            effect.insert(a.change_id.as_str(), e);
        }
        // The server's final state is the replay's.
        let (status, body) = app.entity(TYPE, u);
        let server = match status {
            404 => (State::Absent, 0),
            200 if body["deleted"] == json!(true) => {
                (State::Deleted, body["version"].as_u64().unwrap())
            }
            200 => (
                State::Live(body["data"]["w"].as_str().map(str::to_string)),
                body["version"].as_u64().unwrap(),
            ),
            _ => panic!("seed {seed}: entity {u}: {status} {body}"),
        };
        assert_eq!(
            server,
            (state.clone(), version),
            "seed {seed}: entity {u}: the server's (state, version) differs from its apply \
             order: {body}"
        );
        // Every version the server sent to a node is the replay's version.
        for (su, v, token) in oracle.served.iter().filter(|s| &s.0 == u) {
            let sent = match token {
                Some(t) => State::Live(Some(t.clone())),
                None => State::Deleted,
            };
            assert_eq!(
                versions.get(v),
                Some(&sent),
                "seed {seed}: entity {su} version {v} as sent to a node"
            );
        }
        // History: one row per conflict, by change_id; a losing update's data is there.
        let rows = app.conflicts(&format!("?entity_uuid={u}&limit=1000"));
        let conflicted: Vec<&&Applied> = applied
            .iter()
            .filter(|a| &a.entity_uuid == u && a.conflict.is_some())
            .collect();
        conflicts += conflicted.len();
        assert_eq!(
            rows.len(),
            conflicted.len(),
            "seed {seed}: entity {u}: one history row per conflict: {rows:?}"
        );
        for a in conflicted {
            let mine: Vec<&Value> = rows
                .iter()
                .filter(|r| r["change_id"] == json!(a.change_id))
                .collect();
            assert_eq!(
                mine.len(),
                1,
                "seed {seed}: history rows of {a:?}: {rows:?}"
            );
            assert_eq!(
                mine[0]["conflict_resolution"],
                json!(a.conflict.unwrap().to_string()),
                "seed {seed}: {a:?}"
            );
        }
        let row_of = |a: &Applied| {
            rows.iter()
                .find(|r| r["change_id"] == json!(a.change_id))
                .unwrap()
                .clone()
        };
        for a in lost {
            if let Some(t) = &a.token {
                assert_eq!(
                    row_of(a)["serialized_data"]["w"],
                    json!(t),
                    "seed {seed}: the losing update {a:?} is not kept in its history row"
                );
            }
        }
        for (a, before) in overwrote {
            let State::Live(token) = before else {
                panic!("seed {seed}: {a:?} won a conflict against {before:?}");
            };
            assert_eq!(
                row_of(a)["serialized_data"]["w"],
                json!(token),
                "seed {seed}: the version {a:?} overwrote is not kept in its history row"
            );
        }
    }

    // Every write, by change_id.
    for (i, w) in writes.iter().enumerate() {
        let next = writes[i + 1..]
            .iter()
            .find(|x| x.node == w.node && x.entity == w.entity);
        if next.is_some_and(|x| x.replaced_pending) {
            assert!(
                !oracle.delivered.contains(&w.change_id),
                "seed {seed}: {w:?} was replaced in the outbox while pending, yet sent"
            );
            continue;
        }
        match effect.get(w.change_id.as_str()) {
            Some(Effect::NewVersion) | Some(Effect::LostConflict) => {}
            Some(Effect::NoOpDelete) if w.token.is_none() => {}
            other => panic!(
                "seed {seed}: write {w:?} is not accounted for ({other:?}): never applied, \
                 and not replaced while pending"
            ),
        }
    }
    conflicts
}

/// Seeds to run, from `STARSYNC_FAULT_SEED` / `STARSYNC_FAULT_SEEDS`. Bad values are errors,
/// never a silent default.
fn parse_seeds(one: Option<&str>, count: Option<&str>) -> Result<Vec<u64>, String> {
    if let Some(s) = one {
        return s.trim().parse::<u64>().map(|seed| vec![seed]).map_err(|_| {
            format!("STARSYNC_FAULT_SEED must be a seed number (0 or more), got {s:?}")
        });
    }
    let n = match count {
        None => DEFAULT_SEEDS,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "STARSYNC_FAULT_SEEDS must be a number of seeds, at least 1 (unset: \
                     {DEFAULT_SEEDS}), got {v:?}"
                ))
            }
        },
    };
    Ok((1..=n).collect())
}

fn seeds() -> Vec<u64> {
    let one = std::env::var("STARSYNC_FAULT_SEED").ok();
    let count = std::env::var("STARSYNC_FAULT_SEEDS").ok();
    parse_seeds(one.as_deref(), count.as_deref()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn nodes_converge_under_faults() {
    let started = Instant::now();
    let seeds = seeds();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut exchanges, mut conflicts) = (0, 0);
    for &seed in &seeds {
        let t = Instant::now();
        let o = run_seed(seed);
        eprintln!(
            "seed {seed} ({}): {} exchange calls, {} conflicts, faults {:?} in {:.1}s",
            strategy_for(seed),
            o.exchanges,
            o.conflicts,
            o.faults,
            t.elapsed().as_secs_f64()
        );
        exchanges += o.exchanges;
        conflicts += o.conflicts;
        for (k, v) in o.faults {
            *totals.entry(k).or_insert(0) += v;
        }
    }
    eprintln!(
        "fault runs: {} seeds passed in {:.1}s ({exchanges} exchange calls, {conflicts} \
         conflicts, faults {totals:?})",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    // The run must actually have exercised what it claims to, whatever its size.
    assert!(conflicts > 0, "no conflicts happened");
    for f in REQUIRED_FAULTS {
        assert!(
            totals.get(f).copied().unwrap_or(0) > 0,
            "fault {f} never happened: {totals:?}"
        );
    }
}

#[test]
fn fault_seed_settings_are_checked() {
    assert_eq!(parse_seeds(None, None).unwrap().len() as u64, DEFAULT_SEEDS);
    assert_eq!(parse_seeds(None, Some(" 3 ")).unwrap(), vec![1, 2, 3]);
    assert_eq!(parse_seeds(Some("17"), Some("3")).unwrap(), vec![17]);
    for bad in ["", "many", "0", "-3", "2.5"] {
        let e = parse_seeds(None, Some(bad)).unwrap_err();
        assert!(
            e.contains("STARSYNC_FAULT_SEEDS must be a number of seeds, at least 1"),
            "{e}"
        );
    }
    let e = parse_seeds(Some("x1"), None).unwrap_err();
    assert!(
        e.contains("STARSYNC_FAULT_SEED must be a seed number"),
        "{e}"
    );
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
    // Each change applied once, with its data: version 1, nothing in history.
    for (i, u) in uuids.iter().enumerate() {
        let (s, e) = app.entity(TYPE, u);
        assert_eq!(s, 200, "{e}");
        assert_eq!(
            (e["data"].clone(), e["version"].clone()),
            (json!({"i": i}), json!(1)),
            "{e}"
        );
    }
    assert!(app.conflicts("").is_empty());
    let s = node.status().unwrap();
    assert_eq!(
        (s.in_flight, s.stored_packets, s.server_acked_packet_no),
        (0, 0, 3)
    );
}
