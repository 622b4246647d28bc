//! No leak, ever (PROTOCOL §10), on random histories: several tenants; nodes with one scope,
//! several, `*`, and a type filter; 1,200 random steps of node inserts, updates and deletes
//! (some of them into other tenants, which must be refused), admin writes that move entities
//! between tenants or strip their scope, and scope and type changes by PATCH.
//!
//! After every exchange: no change the node received is outside its scopes and types at that
//! moment (a state of another tenant, a type it does not take, data in a "left your view"
//! DELETE). Every 100 steps: the three views of `pending_changes` agree. At the end, after every
//! node drains its queue: each holds exactly the server's live state filtered by its scopes.
//!
//! Seeded (a xorshift generator, no dependency): one seed by default, more with
//! `STARSYNC_SCOPE_SEEDS=1,2,3`; a failure names its seed and step.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const TENANTS: [&str; 4] = ["ten-1", "ten-2", "ten-3", "ten-4"];
const STEPS: usize = 1200;
/// Ids of scoped entities (Doc and Note), and of the global type.
const SCOPED_IDS: usize = 48;
const GLOBAL_IDS: usize = 6;

/// A deterministic id per seed (UUIDs, since ids must be lowercase UUIDs on this hub).
fn id(seed: u64, kind: &str, i: usize) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{seed}/{kind}/{i}").as_bytes(),
    )
    .to_string()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// What a node may see right now (the test's own model, changed with every PATCH).
#[derive(Clone, Debug)]
struct Scope {
    scopes: BTreeSet<String>,
    types: Option<BTreeSet<String>>,
}

impl Scope {
    fn all(&self) -> bool {
        self.scopes.contains("*")
    }
    fn sees(&self, entity_type: &str, data: &Value) -> bool {
        if let Some(t) = &self.types {
            if !t.contains(entity_type) {
                return false;
            }
        }
        if entity_type == "Country" || self.all() {
            return true;
        }
        data["tenant_id"]
            .as_str()
            .is_some_and(|s| self.scopes.contains(s))
    }
}

struct World {
    app: TestApp,
    nodes: Vec<TestNode>,
    view: Vec<Scope>,
    ids: Vec<(String, String)>,
    rng: Rng,
    seed: u64,
    step: usize,
    writes: u64,
    /// Per node: the ids of its latest answer, received but pending until acknowledged.
    unacked: Vec<BTreeSet<String>>,
}

impl World {
    fn new(seed: u64) -> World {
        // A small batch: packets are cut, so cursors often stop inside the streams.
        let app = TestApp::spawn_with(SCOPED, &[("STARSYNC_BATCH_SIZE", "7")]);
        type Spec = (
            &'static str,
            &'static [&'static str],
            Option<&'static [&'static str]>,
        );
        let specs: [Spec; 6] = [
            ("ONE", &["ten-1"], None),
            ("TWO", &["ten-2"], None),
            ("MULTI", &["ten-1", "ten-3"], None),
            ("STAR", &["*"], None),
            ("DOCS", &["ten-3"], Some(&["Doc", "Country"])),
            ("PAIR", &["ten-2", "ten-4"], None),
        ];
        let mut nodes = Vec::new();
        let mut view = Vec::new();
        for (code, scopes, types) in specs {
            nodes.push(node_with(&app, code, scopes, types));
            view.push(Scope {
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            });
        }
        let mut ids = Vec::new();
        for i in 0..SCOPED_IDS {
            let t = if i % 3 == 0 { "Note" } else { "Doc" };
            ids.push((t.to_string(), id(seed, "e", i)));
        }
        for i in 0..GLOBAL_IDS {
            ids.push(("Country".to_string(), id(seed, "c", i)));
        }
        World {
            app,
            nodes,
            view,
            ids,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            seed,
            step: 0,
            writes: 0,
            unacked: vec![BTreeSet::new(); 6],
        }
    }

    fn at(&self) -> String {
        format!("seed {} step {}", self.seed, self.step)
    }

    /// One exchange of node `i` carrying `changes`, checked for leaks, taken into the node's
    /// local model. Answers the exchange's body.
    fn exchange(&mut self, i: usize, changes: Vec<Value>) -> Value {
        let n = &self.nodes[i];
        let p = n.packet(n.next_packet_no, n.acked, changes.clone());
        let ex = n.post_packet(&self.app, &p);
        assert_eq!(ex.status, 200, "{}: {}", self.at(), ex.body);
        let packet = ex.packet.clone().unwrap();
        let view = &self.view[i];
        for c in ex.changes() {
            let t = c["entity_type"].as_str().unwrap();
            let what = format!("{}: node {} ({view:?}) received {c}", self.at(), n.code);
            if c["operation"] == "DELETE" {
                // A DELETE carries nothing (it may be how an entity leaves the view).
                assert_eq!(c["data"], Value::Null, "{what}");
            } else {
                assert!(view.sees(t, &c["data"]), "LEAK {what}");
            }
        }
        self.unacked[i] = ex
            .changes()
            .iter()
            .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
            .collect();
        // Own writes the server accepted are what the node holds; the answer comes after.
        let body = ex.body.clone();
        self.nodes[i].take_answer(&changes, &body, &packet, false);
        body
    }

    fn tenant(&mut self) -> String {
        TENANTS[self.rng.below(TENANTS.len())].to_string()
    }

    fn node_write(&mut self) {
        let i = self.rng.below(self.nodes.len());
        let (t, u) = self.ids[self.rng.below(SCOPED_IDS)].clone();
        let base = self.nodes[i].version_of(&t, &u);
        self.writes += 1;
        let mut data = json!({"n": self.writes, "by": self.nodes[i].code});
        let own: Vec<String> = self.view[i]
            .scopes
            .iter()
            .filter(|s| *s != "*")
            .cloned()
            .collect();
        let named = if !own.is_empty() && self.rng.chance(75) {
            Some(own[self.rng.below(own.len())].clone())
        } else if self.rng.chance(70) {
            Some(self.tenant())
        } else {
            None
        };
        if let Some(s) = &named {
            data["tenant_id"] = json!(s);
        }
        let body = self.exchange(i, vec![upsert(&t, &u, base, data)]);
        // The scope after the change must be the node's: otherwise refused.
        let view = &self.view[i];
        let outside = match &named {
            Some(s) => !view.all() && !view.scopes.contains(s),
            None => view.all() || view.scopes.iter().filter(|s| *s != "*").count() != 1,
        };
        let typed_out = view.types.as_ref().is_some_and(|ts| !ts.contains(&t));
        if outside || typed_out {
            assert_eq!(
                body["error_count"],
                1,
                "{}: must be refused: {body}",
                self.at()
            );
            let reason = body["errors"][0]["reason"].as_str().unwrap();
            assert!(
                ["forbidden_scope", "scope_required", "forbidden_type"].contains(&reason),
                "{}: {body}",
                self.at()
            );
        }
    }

    fn node_delete(&mut self) {
        let i = self.rng.below(self.nodes.len());
        let (t, u) = self.ids[self.rng.below(SCOPED_IDS)].clone();
        let base = self.nodes[i].version_of(&t, &u);
        self.exchange(i, vec![delete(&t, &u, base)]);
    }

    fn admin_write(&mut self) {
        let k = self.rng.below(self.ids.len());
        let (t, u) = self.ids[k].clone();
        self.writes += 1;
        let mut data = json!({"n": self.writes, "by": "admin"});
        if t != "Country" && self.rng.chance(90) {
            data["tenant_id"] = json!(self.tenant());
        }
        if self.rng.chance(15) {
            self.app
                .delete(&format!("/api/sync/entities/{t}/{u}"), Some(ADMIN));
        } else {
            admin_put(&self.app, &t, &u, data);
        }
    }

    fn patch(&mut self) {
        let i = self.rng.below(self.nodes.len());
        let path = format!("/api/sync/nodes/{}", self.nodes[i].id);
        if self.nodes[i].code == "DOCS" && self.rng.chance(50) {
            let types = if self.view[i].types.is_some() {
                Value::Null
            } else {
                json!(["Doc", "Country"])
            };
            let (s, body) = self
                .app
                .patch(&path, Some(ADMIN), &json!({ "types": types }));
            assert_eq!(s, 200, "{body}");
            self.view[i].types = types
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect());
            return;
        }
        let scopes: BTreeSet<String> = if self.rng.chance(10) {
            ["*".to_string()].into()
        } else {
            (0..self.rng.below(3)).map(|_| self.tenant()).collect()
        };
        let (s, body) = self
            .app
            .patch(&path, Some(ADMIN), &json!({ "scopes": scopes }));
        assert_eq!(s, 200, "{}: {body}", self.at());
        let shown: BTreeSet<String> = body["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert_eq!(shown, scopes, "{body}");
        self.view[i].scopes = scopes;
    }

    /// The three views of `pending_changes` agree (one node's status, the hub's statistics,
    /// the node list: SQL per stream, and the one-pass formula).
    fn check_counts(&self) {
        let (_, stats) = self.app.get("/api/sync/status", Some(ADMIN));
        let (_, list) = self.app.get("/api/sync/nodes", Some(ADMIN));
        for (k, n) in self.nodes.iter().enumerate() {
            let own = self.app.node_status(n)["pending_changes"].clone();
            assert_eq!(
                stats["pending_counts"][&n.id]["pending_changes"],
                own,
                "{}: {}",
                self.at(),
                n.code
            );
            assert_eq!(
                list["nodes"][k]["pending_changes"],
                own,
                "{}: {}",
                self.at(),
                n.code
            );
        }
    }

    fn run(&mut self) {
        for step in 0..STEPS {
            self.step = step;
            match self.rng.below(100) {
                0..=34 => self.node_write(),
                35..=44 => self.node_delete(),
                45..=56 => self.admin_write(),
                57..=62 => self.patch(),
                _ => {
                    let i = self.rng.below(self.nodes.len());
                    self.exchange(i, vec![]);
                }
            }
            if step % 100 == 99 {
                self.check_counts();
            }
        }
        self.step = STEPS;
    }

    /// Every node drains its queue; then it holds exactly the server's live state in its view.
    fn drain_and_compare(&mut self) {
        let mut server: BTreeMap<(String, String), Value> = BTreeMap::new();
        for t in ["Doc", "Note", "Country"] {
            let (s, page) = self.app.get(
                &format!("/api/sync/entities?entity_type={t}&limit=1000"),
                Some(ADMIN),
            );
            assert_eq!(s, 200, "{page}");
            for e in page["entities"].as_array().unwrap() {
                if e["deleted"] == json!(false) {
                    let key = (
                        t.to_string(),
                        e["entity_uuid"].as_str().unwrap().to_string(),
                    );
                    server.insert(key, e["data"].clone());
                }
            }
        }
        for i in 0..self.nodes.len() {
            let status = self.app.node_status(&self.nodes[i]);
            let mut received = self.unacked[i].clone();
            loop {
                let body = self.exchange(i, vec![]);
                let packet = decode(body["packet_data"].as_str().unwrap());
                for c in packet["changes"].as_array().unwrap() {
                    received.insert(c["entity_uuid"].as_str().unwrap().to_string());
                }
                if packet["more"] != json!(true) {
                    break;
                }
            }
            let code = self.nodes[i].code.clone();
            // What it said was pending is what came (nothing changed meanwhile).
            assert_eq!(
                status["pending_changes"].as_u64().unwrap() as usize,
                received.len(),
                "seed {}: {code}: status vs received",
                self.seed
            );
            let body = self.exchange(i, vec![]);
            assert_eq!(
                decode(body["packet_data"].as_str().unwrap())["changes"],
                json!([])
            );
            assert_eq!(self.app.node_status(&self.nodes[i])["pending_changes"], 0);
            let want: BTreeMap<(String, String), Value> = server
                .iter()
                .filter(|((t, _), d)| self.view[i].sees(t, d))
                .map(|(k, d)| (k.clone(), d.clone()))
                .collect();
            let held: BTreeMap<(String, String), Value> = self.nodes[i]
                .entities
                .iter()
                .filter(|(_, (_, d))| !d.is_null())
                .map(|(k, (_, d))| (k.clone(), d.clone()))
                .collect();
            assert_eq!(
                held, want,
                "seed {}: {code} ({:?}) holds exactly its view of the server",
                self.seed, self.view[i]
            );
        }
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("STARSYNC_SCOPE_SEEDS") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|x| x.trim().parse().expect("STARSYNC_SCOPE_SEEDS: numbers"))
            .collect(),
        _ => vec![7],
    }
}

#[test]
fn no_node_ever_receives_or_keeps_an_entity_outside_its_scopes() {
    for seed in seeds() {
        let mut w = World::new(seed);
        w.run();
        w.check_counts();
        w.drain_and_compare();
    }
}
