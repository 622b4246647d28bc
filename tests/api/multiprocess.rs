//! Several `starsync serve` processes on one database (issue 4). Runs on both backends: with
//! `STARSYNC_TEST_DATABASE_URL` set, on PostgreSQL; otherwise several processes share one
//! SQLite file.
use crate::helpers::*;

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One write a node made, remembered for the no-silent-loss check.
#[derive(Debug, Clone)]
struct Write {
    change_id: String,
    uuid: String,
    marker: Option<String>,
    conflict: bool,
}

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

#[test]
fn many_nodes_on_several_processes_converge_without_silent_loss() {
    let seeds: u64 = std::env::var("STARSYNC_MP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for seed in 0..seeds {
        run_cluster(seed);
    }
}

fn run_cluster(seed: u64) {
    let app = TestApp::spawn();
    let (_procs, bases) = cluster(&app);
    let pool: Vec<String> = (0..8).map(|_| new_uuid()).collect();
    let nodes: Vec<TestNode> = (0..6).map(|i| app.register(&format!("N{i}"))).collect();
    let steps = 30;

    // Every node works in its own thread against random processes, at the same time.
    let results: Vec<(TestNode, Vec<Write>)> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, mut node)| {
                let (bases, pool) = (bases.clone(), pool.clone());
                s.spawn(move || {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + i as u64);
                    let mut writes = Vec::new();
                    let mut last_packet = 0u64;
                    for step in 0..steps {
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
                        let is_delete = c["operation"] == "DELETE";
                        let change_id = c["change_id"].as_str().unwrap().to_string();
                        let base = &bases[rng.random_range(0..bases.len())];
                        let ex = node.sync_at(base, vec![c]);
                        assert_eq!(ex.status, 200, "{}", ex.body);
                        assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
                        let no = ex.packet.as_ref().unwrap()["packet_no"].as_u64().unwrap();
                        assert!(
                            no > last_packet,
                            "server packet numbers only grow for one node"
                        );
                        last_packet = no;
                        let conflict = ex.body["conflicts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|r| r["change_id"] == json!(change_id));
                        writes.push(Write {
                            change_id,
                            uuid: u.clone(),
                            marker: (!is_delete).then_some(marker),
                            conflict,
                        });
                    }
                    (node, writes)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Quiet phase: everyone drains, twice round, against random processes.
    let mut nodes: Vec<TestNode> = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
    for (n, w) in results {
        nodes.push(n);
        writes.extend(w);
    }
    for round in 0..2 {
        for (i, n) in nodes.iter_mut().enumerate() {
            let base = bases[(i + round) % bases.len()].clone();
            loop {
                let ex = n.sync_at(&base, vec![]);
                assert_eq!(ex.status, 200, "{}", ex.body);
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

    // Nothing lost silently: every write that met a conflict has exactly one history row
    // carrying its change_id; a losing update's data is stored there.
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
    let by_change: HashMap<String, Vec<&Value>> =
        history.iter().fold(HashMap::new(), |mut m, r| {
            m.entry(r["change_id"].as_str().unwrap_or("").to_string())
                .or_default()
                .push(r);
            m
        });
    let conflicts = writes.iter().filter(|w| w.conflict).count();
    assert_eq!(history.len(), conflicts, "one history row per conflict");
    for w in writes.iter().filter(|w| w.conflict) {
        let rows = by_change
            .get(&w.change_id)
            .unwrap_or_else(|| panic!("no history row for {w:?}"));
        assert_eq!(rows.len(), 1, "{w:?}");
        let row = rows[0];
        assert_eq!(row["entity_uuid"], json!(w.uuid));
        let res = row["conflict_resolution"].as_str().unwrap();
        if res.ends_with(":server") {
            // The node's version lost: it is the stored one.
            assert_eq!(
                row["serialized_data"]["marker"],
                json!(w.marker.clone().unwrap()),
                "{row}"
            );
        }
    }
    eprintln!(
        "seed {seed}: {} writes over {} processes, {} conflicts, all {} nodes converged",
        writes.len(),
        bases.len(),
        conflicts,
        nodes.len()
    );
}
