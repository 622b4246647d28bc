//! Several `starsync serve` processes on one database (issue 4). Runs on both backends: with
//! `STARSYNC_TEST_DATABASE_URL` set, on PostgreSQL; otherwise several processes share one
//! SQLite file.
//!
//! The convergence test runs six raw-protocol nodes at once against three processes with
//! faults: requests dropped before a server, answers dropped after it applied the packet,
//! old packets replayed, and one process `kill -9`ed while an exchange to it is in flight
//! (a new process takes its place). Every write is accounted for by its change_id.
use crate::helpers::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn cluster(app: &TestApp) -> (Vec<ServerProcess>, Vec<String>) {
    let procs = vec![ServerProcess::spawn(app), ServerProcess::spawn(app)];
    let mut bases = vec![app.base.clone()];
    bases.extend(procs.iter().map(|p| p.base.clone()));
    (procs, bases)
}

#[test]
fn one_node_packet_posted_to_every_process_at_once_is_applied_once() {
    let app = TestApp::spawn();
    let (_procs, bases) = cluster(&app);
    let mut a = app.register("A");
    let mut b = app.register("B");
    for round in 0..5u64 {
        let u = new_uuid();
        let packet = a.packet(
            a.next_packet_no,
            a.acked,
            vec![upsert("Doc", &u, 0, json!({"round": round}))],
        );
        let body = json!({"packet_data": encode(&packet)});
        let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
            let handles: Vec<_> = bases
                .iter()
                .map(|base| {
                    let (base, token, body) = (base.clone(), a.token.clone(), body.clone());
                    s.spawn(move || post_to(&base, "/api/sync/exchange", Some(&token), &body))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let applied = answers
            .iter()
            .filter(|(s, b)| *s == 200 && b["duplicate"] == false)
            .count();
        let duplicates = answers
            .iter()
            .filter(|(s, b)| *s == 200 && b["duplicate"] == true)
            .count();
        assert_eq!(
            applied, 1,
            "exactly one process applies the packet: {answers:?}"
        );
        assert_eq!(duplicates, bases.len() - 1, "{answers:?}");
        let numbers: HashSet<u64> = answers
            .iter()
            .map(|(_, b)| {
                decode(b["packet_data"].as_str().unwrap())["packet_no"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            numbers.len(),
            bases.len(),
            "server packet numbers are never handed out twice"
        );
        a.next_packet_no += 1;
        a.acked = *numbers.iter().max().unwrap();
        // B gets the entity exactly once, at version 1.
        let got = b.sync_at(&bases[round as usize % bases.len()], vec![]);
        let changes = got.changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0]["version"], 1);
    }
}

/// Seeds of the faulted convergence test: `STARSYNC_MP_SEEDS` (at least 1; unset: 2). A bad
/// value is an error, never a silent default.
fn parse_mp_seeds(v: Option<&str>) -> Result<u64, String> {
    match v {
        None => Ok(2),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "STARSYNC_MP_SEEDS must be a number of seeds, at least 1, got {v:?}"
            )),
        },
    }
}

#[test]
fn mp_seed_settings_are_checked() {
    assert_eq!(parse_mp_seeds(None), Ok(2));
    assert_eq!(parse_mp_seeds(Some("5")), Ok(5));
    for bad in ["0", "", "two", "-1"] {
        assert!(parse_mp_seeds(Some(bad))
            .unwrap_err()
            .contains("at least 1"));
    }
}

#[test]
fn many_nodes_on_several_processes_converge_under_faults_without_silent_loss() {
    let seeds = parse_mp_seeds(std::env::var("STARSYNC_MP_SEEDS").ok().as_deref())
        .unwrap_or_else(|e| panic!("{e}"));
    for seed in 0..seeds {
        run_cluster(seed);
    }
}

const NODES: usize = 6;
const STEPS: usize = 30;
/// The process slot killed mid-exchange (slot 0 is the in-process server).
const VICTIM: usize = 1;

/// The servers, shared by the node threads: each slot's base URL and generation (odd while its
/// process is being killed, even again with the new process), so a failed request to a dead
/// process is known for what it is.
struct Cluster {
    slots: RwLock<Vec<(String, u64)>>,
    /// Requests in progress per slot.
    inflight: Vec<AtomicUsize>,
    /// Requests sent before their process was killed that got no answer.
    cut: Vec<AtomicUsize>,
    /// When each slot's process was killed.
    killed_at: Mutex<Vec<Vec<Instant>>>,
}

/// One write a node made (`uuid` and `marker` show in failure messages).
#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Write {
    change_id: String,
    uuid: String,
    marker: Option<String>,
}

/// One change the server applied, as the node thread learned it.
#[derive(Debug, Clone)]
struct Record {
    change_id: String,
    uuid: String,
    marker: Option<String>,
    delete: bool,
    /// `<strategy>:<winner>` when it met a conflict.
    conflict: Option<String>,
    rejected: bool,
    /// It was applied between these two instants.
    from: Instant,
    to: Instant,
}

impl Record {
    fn accepted(&self) -> bool {
        !self.rejected
            && self
                .conflict
                .as_deref()
                .map(|c| c.ends_with(":client"))
                .unwrap_or(true)
    }
}

/// What a node thread saw.
#[derive(Default)]
struct Log {
    writes: Vec<Write>,
    records: Vec<Record>,
    /// (uuid, version) → marker (None: deleted) of every server change received.
    served: Vec<(String, u64, Option<String>)>,
    faults: BTreeMap<&'static str, u64>,
}

/// The node's packet waiting for an answer.
struct InFlight {
    packet_no: u64,
    body: Value,
    changes: Vec<Value>,
    /// When a request carrying it went to a process that died before answering.
    cut_at: Option<Instant>,
}

fn bump(log: &mut Log, name: &'static str) {
    *log.faults.entry(name).or_insert(0) += 1;
}

/// POSTs an exchange body; `Err` when no answer came (refused, reset, cut off).
fn try_exchange(base: &str, token: &str, body: &Value) -> Result<(u16, Value), String> {
    let r = ureq::post(&format!("{base}/api/sync/exchange"))
        .set("Content-Type", "application/json")
        .set("Authorization", &format!("Bearer {token}"))
        .send_bytes(body.to_string().as_bytes());
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    let status = resp.status();
    let text = resp.into_string().map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The changes of `packet` as the answer `body` reports them.
fn records_of(changes: &[Value], body: &Value, from: Instant) -> Vec<Record> {
    let rejected: HashSet<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change_id"].as_str().unwrap())
        .collect();
    let conflicts: HashMap<&str, String> = body["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change_id"].as_str().unwrap(),
                c["conflict_resolution"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    changes
        .iter()
        .map(|c| {
            let id = c["change_id"].as_str().unwrap();
            Record {
                change_id: id.to_string(),
                uuid: c["entity_uuid"].as_str().unwrap().to_string(),
                marker: c["data"]["marker"].as_str().map(str::to_string),
                delete: c["operation"] == "DELETE",
                conflict: conflicts.get(id).cloned(),
                rejected: rejected.contains(id),
                from,
                to: Instant::now(),
            }
        })
        .collect()
}

/// The report part of an answer (what a duplicate answer must repeat).
fn report_of(body: &Value) -> Value {
    json!({"errors": body["errors"], "conflicts": body["conflicts"]})
}

/// One node's life: `steps` writes, each in its own packet, sent until answered, with faults.
fn node_thread(
    seed: u64,
    i: usize,
    mut node: TestNode,
    cluster: &Cluster,
    pool: &[String],
    steps: usize,
) -> (TestNode, Log) {
    let mut log = Log::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + i as u64);
    let mut inflight: Option<InFlight> = None;
    // Packets applied: packet_no → (body sent, report answered).
    let mut applied: HashMap<u64, (Value, Value)> = HashMap::new();
    let mut last_server_packet = 0u64;
    let mut step = 0;
    while step < steps || inflight.is_some() {
        if inflight.is_none() {
            let u = &pool[rng.random_range(0..pool.len())];
            let known = node.version_of("Doc", u);
            let deleted = node
                .entities
                .get(&("Doc".to_string(), u.clone()))
                .map(|e| e.1.is_null())
                .unwrap_or(false);
            let marker = format!("{}-{seed}-{step}", node.code);
            let roll = rng.random_range(0..100);
            let c = if known == 0 {
                upsert("Doc", u, 0, json!({"marker": marker}))
            } else if roll < 15 && !deleted {
                delete("Doc", u, known)
            } else if roll < 30 {
                // A stale edit: based on an older version.
                change(
                    "UPDATE",
                    "Doc",
                    u,
                    known.saturating_sub(1).max(1),
                    json!({"marker": marker}),
                )
            } else {
                change("UPDATE", "Doc", u, known, json!({"marker": marker}))
            };
            log.writes.push(Write {
                change_id: c["change_id"].as_str().unwrap().to_string(),
                uuid: u.clone(),
                marker: (c["operation"] != "DELETE").then_some(marker),
            });
            let packet = node.packet(node.next_packet_no, node.acked, vec![c.clone()]);
            inflight = Some(InFlight {
                packet_no: node.next_packet_no,
                body: json!({"packet_data": encode(&packet)}),
                changes: vec![c],
                cut_at: None,
            });
            step += 1;
        }
        let f = inflight.as_mut().unwrap();
        let slots = cluster.slots.read().clone();
        // A replay of an applied packet: a duplicate repeating its first report.
        if !applied.is_empty() && rng.random_bool(0.1) {
            let nos: Vec<&u64> = applied.keys().collect();
            let no = *nos[rng.random_range(0..nos.len())];
            let (body, report) = &applied[&no];
            let (base, _) = &slots[rng.random_range(0..slots.len())];
            match try_exchange(base, &node.token, body) {
                Ok((200, b)) => {
                    assert_eq!(b["duplicate"], true, "replay of packet {no}: {b}");
                    assert_eq!(
                        &report_of(&b),
                        report,
                        "replay of packet {no} repeats its report"
                    );
                    bump(&mut log, "replay_duplicate");
                }
                Ok((s, b)) => panic!("replay of packet {no}: {s} {b}"),
                Err(_) => bump(&mut log, "replay_to_dead_process"),
            }
        }
        if rng.random_bool(0.1) {
            bump(&mut log, "drop_request");
            continue;
        }
        let k = rng.random_range(0..slots.len());
        let (base, generation) = &slots[k];
        let started = Instant::now();
        cluster.inflight[k].fetch_add(1, Ordering::SeqCst);
        let answer = try_exchange(base, &node.token, &f.body);
        cluster.inflight[k].fetch_sub(1, Ordering::SeqCst);
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                // Only a killed process may fail to answer: the slot's generation is odd while
                // its process is being killed, and moves on with the new process.
                let now_gen = cluster.slots.read()[k].1;
                assert!(
                    generation % 2 == 1 || now_gen != *generation,
                    "{}: no answer from a live server at {base}: {e}",
                    node.code
                );
                if cluster.killed_at.lock()[k].iter().any(|t| *t > started) {
                    cluster.cut[k].fetch_add(1, Ordering::SeqCst);
                    bump(&mut log, "cut_by_kill");
                } else {
                    bump(&mut log, "refused_by_dead_process");
                }
                f.cut_at.get_or_insert(started);
                continue;
            }
        };
        assert_eq!(status, 200, "{}: packet {}: {body}", node.code, f.packet_no);
        assert_eq!(body["error_count"], 0, "{body}");
        let first = !applied.contains_key(&f.packet_no);
        if body["duplicate"] == false {
            assert!(
                first,
                "{}: packet {} applied twice: {body}",
                node.code, f.packet_no
            );
            log.records.extend(records_of(&f.changes, &body, started));
        } else if first {
            // Only a process killed before it answered can have applied it unseen.
            let from = f.cut_at.unwrap_or_else(|| {
                panic!(
                    "{}: packet {} answered as a duplicate but never applied: {body}",
                    node.code, f.packet_no
                )
            });
            log.records.extend(records_of(&f.changes, &body, from));
            bump(&mut log, "killed_after_commit");
        }
        if first {
            applied.insert(f.packet_no, (f.body.clone(), report_of(&body)));
        }
        if rng.random_bool(0.1) {
            // The server applied it; the node never hears: it sends the packet again.
            bump(&mut log, "drop_answer");
            continue;
        }
        let packet = decode(body["packet_data"].as_str().unwrap());
        let no = packet["packet_no"].as_u64().unwrap();
        assert!(
            no > last_server_packet,
            "server packet numbers only grow for one node"
        );
        last_server_packet = no;
        for c in packet["changes"].as_array().unwrap() {
            log.served.push((
                c["entity_uuid"].as_str().unwrap().to_string(),
                c["version"].as_u64().unwrap(),
                (c["operation"] != "DELETE")
                    .then(|| c["data"]["marker"].as_str().unwrap().to_string()),
            ));
        }
        let sent = std::mem::take(&mut f.changes);
        node.take_answer(&sent, &body, &packet, false);
        inflight = None;
    }
    (node, log)
}

fn run_cluster(seed: u64) {
    let app = TestApp::spawn();
    let spec = ProcessSpec::of(&app);
    // The victim's log says when it is inside an exchange's transaction.
    let lock_log = format!("{}=debug", starsync::store::WRITER_LOCK_LOG);
    let mut procs = [
        ServerProcess::spawn_spec_logged(&spec, &lock_log),
        ServerProcess::spawn_spec(&spec),
    ];
    let cluster = Cluster {
        slots: RwLock::new(
            std::iter::once(app.base.clone())
                .chain(procs.iter().map(|p| p.base.clone()))
                .map(|b| (b, 0))
                .collect(),
        ),
        inflight: (0..3).map(|_| AtomicUsize::new(0)).collect(),
        cut: (0..3).map(|_| AtomicUsize::new(0)).collect(),
        killed_at: Mutex::new(vec![Vec::new(); 3]),
    };
    let pool: Vec<String> = (0..8).map(|_| new_uuid()).collect();
    let nodes: Vec<TestNode> = (0..NODES).map(|i| app.register(&format!("N{i}"))).collect();

    // Every node works in its own thread against random processes, at the same time, with
    // faults. Meanwhile this thread kills the victim process the moment its log says it is
    // inside an exchange's transaction (again, until a request sent before a kill got no
    // answer), and starts a new one in its place.
    let mut kills = 0;
    let results: Vec<(TestNode, Log)> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, node)| {
                let (cluster, pool) = (&cluster, &pool);
                s.spawn(move || node_thread(seed, i, node, cluster, pool, STEPS))
            })
            .collect();
        while cluster.cut[VICTIM].load(Ordering::SeqCst) == 0 {
            assert!(
                handles.iter().any(|h| !h.is_finished()),
                "seed {seed}: the nodes finished before a kill cut an exchange ({kills} kills)"
            );
            let victim = &mut procs[VICTIM - 1];
            let log = victim.log.as_ref().unwrap();
            while log.try_recv().is_ok() {}
            match log.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains("waiting for the writer lock") => {}
                _ => continue,
            }
            // A new generation before the kill, and another with the new process's address:
            // a request that fails is expected exactly when its generation is not the latest.
            cluster.slots.write()[VICTIM].1 += 1;
            cluster.killed_at.lock()[VICTIM].push(Instant::now());
            victim.kill9();
            kills += 1;
            // Let the requests in flight to it come back, answered or not.
            while cluster.inflight[VICTIM].load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
            *victim = ServerProcess::spawn_spec_logged(&spec, &lock_log);
            let mut slots = cluster.slots.write();
            slots[VICTIM].0 = victim.base.clone();
            slots[VICTIM].1 += 1;
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Quiet phase: every node drains, twice round, against random processes, without faults.
    let mut nodes: Vec<TestNode> = Vec::new();
    let mut logs: Vec<Log> = Vec::new();
    for (n, l) in results {
        nodes.push(n);
        logs.push(l);
    }
    let bases: Vec<String> = cluster.slots.read().iter().map(|s| s.0.clone()).collect();
    for round in 0..2 {
        for (i, n) in nodes.iter_mut().enumerate() {
            let base = bases[(i + round) % bases.len()].clone();
            loop {
                let ex = n.sync_at(&base, vec![]);
                assert_eq!(ex.status, 200, "{}", ex.body);
                for c in ex.changes() {
                    logs[i].served.push((
                        c["entity_uuid"].as_str().unwrap().to_string(),
                        c["version"].as_u64().unwrap(),
                        (c["operation"] != "DELETE")
                            .then(|| c["data"]["marker"].as_str().unwrap().to_string()),
                    ));
                }
                if !ex.more() {
                    break;
                }
            }
        }
    }

    // Every node equals the server.
    for u in &pool {
        let (status, server) = app.entity("Doc", u);
        for n in &nodes {
            let local = n.entities.get(&("Doc".to_string(), u.clone()));
            match status {
                404 => assert!(local.is_none(), "{} has {u} the server never had", n.code),
                200 => {
                    let (v, data) = local.unwrap_or_else(|| panic!("{} lacks {u}", n.code));
                    // A node's own latest write is never echoed, so the version it knows may
                    // lag; the state must be equal.
                    assert!(
                        *v <= server["version"].as_u64().unwrap(),
                        "{} version of {u}",
                        n.code
                    );
                    if server["deleted"] == true {
                        assert!(data.is_null(), "{} still has deleted {u}", n.code);
                    } else {
                        assert_eq!(data, &server["data"], "{} data of {u}", n.code);
                    }
                }
                other => panic!("GET entity: {other} {server}"),
            }
        }
    }
    for n in &nodes {
        assert_eq!(
            app.node_status(n)["pending_changes"],
            0,
            "{} still has pending changes",
            n.code
        );
    }
    check_accounting(seed, &app, &pool, &logs);

    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &logs {
        for (k, v) in &l.faults {
            *faults.entry(k).or_insert(0) += v;
        }
    }
    for f in ["drop_request", "drop_answer", "replay_duplicate"] {
        assert!(
            faults.get(f).copied().unwrap_or(0) > 0,
            "seed {seed}: no {f}: {faults:?}"
        );
    }
    eprintln!(
        "seed {seed}: {} writes over 3 processes, {kills} kill(s) of a process with {} \
         exchange(s) cut, faults {faults:?}; all {} nodes converged",
        logs.iter().map(|l| l.writes.len()).sum::<usize>(),
        cluster.cut[VICTIM].load(Ordering::SeqCst),
        nodes.len()
    );
}

/// Every write accounted for by its change_id:
/// - applied exactly once (no change_id twice among the applications the nodes saw, every
///   write among them), never rejected;
/// - a conflict has exactly one history row, found by its change_id, holding a losing
///   update's data, and there are no other rows;
/// - an accepted write (no conflict, or the node won) is the entity's final state, or another
///   accepted change of the entity may have come after it (it was not answered before this
///   one was sent) — if every other accepted change was answered before it was sent, it is
///   the last one and must be the state;
/// - each entity's version counts its accepted writes (deletes of a deleted entity change
///   nothing, so between #updates and #updates + #deletes), and every version a node received
///   carries one state, written by an accepted write.
fn check_accounting(seed: u64, app: &TestApp, pool: &[String], logs: &[Log]) {
    let records: Vec<&Record> = logs.iter().flat_map(|l| &l.records).collect();
    let writes: Vec<&Write> = logs.iter().flat_map(|l| &l.writes).collect();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *times.entry(r.change_id.as_str()).or_insert(0) += 1;
        assert!(!r.rejected, "seed {seed}: rejected {r:?}");
    }
    for w in &writes {
        assert_eq!(
            times.get(w.change_id.as_str()).copied().unwrap_or(0),
            1,
            "seed {seed}: {w:?} must be applied exactly once"
        );
    }
    assert_eq!(
        times.len(),
        writes.len(),
        "seed {seed}: applied changes nobody wrote"
    );

    // History, all pages.
    let history: Vec<Value> = {
        let mut all = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let q = match &before {
                Some(b) => format!("?limit=1000&before={b}"),
                None => "?limit=1000".to_string(),
            };
            let page = app.conflicts(&q);
            if page.is_empty() {
                break all;
            }
            before = Some(page.last().unwrap()["id"].as_str().unwrap().to_string());
            all.extend(page);
        }
    };
    let conflicted: Vec<&&Record> = records.iter().filter(|r| r.conflict.is_some()).collect();
    assert_eq!(
        history.len(),
        conflicted.len(),
        "seed {seed}: one history row per conflict"
    );
    for r in conflicted {
        let rows: Vec<&Value> = history
            .iter()
            .filter(|h| h["change_id"] == json!(r.change_id))
            .collect();
        assert_eq!(rows.len(), 1, "seed {seed}: history rows of {r:?}");
        let row = rows[0];
        assert_eq!(row["entity_uuid"], json!(r.uuid));
        assert_eq!(row["conflict_resolution"], json!(r.conflict), "{row}");
        if !r.accepted() {
            if let Some(m) = &r.marker {
                assert_eq!(
                    row["serialized_data"]["marker"],
                    json!(m),
                    "seed {seed}: a losing update's data is kept: {row}"
                );
            }
        }
    }

    for u in pool {
        let (status, server) = app.entity("Doc", u);
        let mine: Vec<&&Record> = records.iter().filter(|r| &r.uuid == u).collect();
        let accepted: Vec<&&&Record> = mine.iter().filter(|r| r.accepted()).collect();
        let puts = accepted.iter().filter(|r| !r.delete).count() as u64;
        let deletes = accepted.iter().filter(|r| r.delete).count() as u64;
        let (version, final_marker, final_deleted) = match status {
            404 => (0, None, false),
            200 => (
                server["version"].as_u64().unwrap(),
                server["data"]["marker"].as_str().map(str::to_string),
                server["deleted"] == true,
            ),
            other => panic!("GET entity: {other} {server}"),
        };
        assert!(
            version >= puts && version <= puts + deletes,
            "seed {seed}: {u} is at version {version} after {puts} accepted updates and \
             {deletes} accepted deletes"
        );
        for r in &accepted {
            let is_state = if r.delete {
                final_deleted
            } else {
                !final_deleted && final_marker == r.marker
            };
            let maybe_later = accepted
                .iter()
                .any(|x| x.change_id != r.change_id && x.to > r.from);
            assert!(
                is_state || maybe_later,
                "seed {seed}: {r:?} was the last accepted change of {u}, but the server holds \
                 {server}"
            );
        }
        // What nodes received: one state per version, each written by an accepted write.
        let mut seen: HashMap<u64, &Option<String>> = HashMap::new();
        for (_, v, m) in logs.iter().flat_map(|l| &l.served).filter(|s| &s.0 == u) {
            if let Some(prev) = seen.insert(*v, m) {
                assert_eq!(prev, m, "seed {seed}: {u} version {v} sent with two states");
            }
            if let Some(m) = m {
                assert!(
                    accepted.iter().any(|r| r.marker.as_ref() == Some(m)),
                    "seed {seed}: {u} version {v} carries {m}, which no accepted write wrote"
                );
            }
            assert!(
                *v <= version,
                "seed {seed}: {u} version {v} beyond the final {version}"
            );
        }
    }
}
