//! The pending-queue rule on random logs (a property test).
//!
//! `src/store/pending.rs` writes one rule three ways: a SQL filter (`log_entries`,
//! `count_in_log`), a predicate on one entity (`in_log`) and a one-pass counting formula
//! (`counts_in_log`). A hand-written scenario only checks the logs its author thought of, so
//! here proptest makes the logs: random sequences of nodes registering, writing and deleting
//! entities through real exchanges (losing conflicts on the way, which queues the server's state
//! for them), acknowledging by exchanging, and the admin writing. After every step the three
//! encodings must agree with each other and with every HTTP view of `pending_changes` (one
//! node's status, the hub's statistics, the node list); at the end every node drains its queue
//! over HTTP, and what it receives must be exactly the pending set.
//!
//! The encodings are read straight from the test's database (the root crate is a library), the
//! views over HTTP; both backends, like every test here (`STARSYNC_TEST_DATABASE_URL`).
//!
//! The same runs again on a hub with scopes (PROTOCOL §10): nodes register with one, two, `*`
//! or no scopes, writes name a tenant or not (stamped, or rejected), the admin moves entities
//! between tenants, and nodes' scopes change by PATCH; the rule then has streams, exits and
//! losses, and the same agreements must hold.
use crate::helpers::*;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::{json, Value};
use starsync::store::pending::View;
use starsync::store::{self, models::Entity, pending, PooledConn};

/// At most this many nodes register in one log.
const MAX_NODES: usize = 4;
/// Entities per type: few, so nodes keep writing the same ones and conflict.
const PER_TYPE: usize = 3;
/// `Doc` keeps the default `server_wins` (the loser gets the server's state queued for it);
/// `Task` is `client_wins` with "done wins", whose merges are hub versions nobody holds.
const TYPES: [&str; 2] = ["Doc", "Task"];
const RULES: &str = r#"
[conflicts.types.Task]
strategy = "client_wins"
priority_values = { status = "done" }
"#;
/// The scoped runs: `tenant` holds the scope; `Task` stays as above.
const SCOPED_RULES: &str = r#"
[scopes]
field = "tenant"
[conflicts.types.Task]
strategy = "client_wins"
priority_values = { status = "done" }
"#;
/// Scope sets a node may have in a scoped run (picked by index).
const SCOPE_SETS: [&[&str]; 5] = [&["a"], &["b"], &["a", "b"], &["*"], &[]];
/// Tenants a write may name (`None`: the data names none).
const TENANTS: [Option<&str>; 3] = [Some("a"), Some("b"), None];

/// An entity as `type/uuid`.
type Key = String;

/// One step of a random log. Node numbers pick among the nodes registered so far (modulo), so
/// shrinking a log never makes a step invalid.
#[derive(Debug, Clone)]
enum Op {
    /// The next node registers (nothing once `MAX_NODES` have).
    Register,
    /// A node writes an entity, based on the version it last received (stale when others wrote
    /// since: a conflict). `done` sets the priority value.
    Write {
        node: usize,
        entity: usize,
        done: bool,
    },
    /// A node deletes an entity, based on the version it last received.
    Delete { node: usize, entity: usize },
    /// A node exchanges an empty packet: it acknowledges its last answer and gets the next.
    Sync { node: usize },
    /// The admin writes or deletes an entity (a hub version: every node gets it).
    Admin {
        entity: usize,
        delete: bool,
        tenant: usize,
    },
    /// Scoped runs: the admin gives a node another scope set (`SCOPE_SETS`).
    Patch { node: usize, set: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let entity = 0..TYPES.len() * PER_TYPE;
    prop_oneof![
        1 => Just(Op::Register),
        4 => (0..MAX_NODES, entity.clone(), any::<bool>())
            .prop_map(|(node, entity, done)| Op::Write { node, entity, done }),
        2 => (0..MAX_NODES, entity.clone()).prop_map(|(node, entity)| Op::Delete { node, entity }),
        3 => (0..MAX_NODES).prop_map(|node| Op::Sync { node }),
        1 => (entity, any::<bool>(), 0..TENANTS.len())
            .prop_map(|(entity, delete, tenant)| Op::Admin { entity, delete, tenant }),
        1 => (0..MAX_NODES, 0..SCOPE_SETS.len()).prop_map(|(node, set)| Op::Patch { node, set }),
    ]
}

/// A server, its nodes, and a connection to its database for reading the encodings directly.
struct World {
    // Closed before the server and its database go (fields drop in order).
    db: PooledConn,
    app: TestApp,
    nodes: Vec<TestNode>,
    /// Per node: the entities of its latest answer, delivered but pending until acknowledged.
    unacked: Vec<BTreeSet<Key>>,
    /// (type, uuid) of every entity a step may touch.
    entities: Vec<(String, String)>,
    writes: u64,
    /// A hub with scopes (then writes name tenants and nodes have scope sets).
    scoped: bool,
}

fn key(t: &str, u: &str) -> Key {
    format!("{t}/{u}")
}

fn keys_of(changes: &[Value]) -> BTreeSet<Key> {
    changes
        .iter()
        .map(|c| {
            key(
                c["entity_type"].as_str().unwrap(),
                c["entity_uuid"].as_str().unwrap(),
            )
        })
        .collect()
}

impl World {
    fn new(scoped: bool) -> World {
        // A small batch, so packets are cut and cursors stop inside the log.
        let rules = if scoped { SCOPED_RULES } else { RULES };
        let app = TestApp::spawn_with(rules, &[("STARSYNC_BATCH_SIZE", "2")]);
        let url = app.cli_env()["DATABASE_URL"].clone();
        let db = store::connect(&url, 1, 1000)
            .expect("open the test database")
            .get()
            .unwrap();
        let entities = TYPES
            .iter()
            .flat_map(|t| (0..PER_TYPE).map(|_| (t.to_string(), new_uuid())))
            .collect();
        let mut w = World {
            db,
            app,
            nodes: Vec::new(),
            unacked: Vec::new(),
            entities,
            writes: 0,
            scoped,
        };
        w.register();
        w
    }

    fn register(&mut self) {
        if self.nodes.len() < MAX_NODES {
            let code = format!("N{}", self.nodes.len());
            let node = if self.scoped {
                let set = SCOPE_SETS[(self.nodes.len() * 3 + 2) % SCOPE_SETS.len()];
                self.app.register_with(&code, json!({ "scopes": set }))
            } else {
                self.app.register(&code)
            };
            self.nodes.push(node);
            self.unacked.push(BTreeSet::new());
        }
    }

    /// One exchange of node `i` (the node acknowledges its last answer, as a real node does).
    fn exchange(&mut self, i: usize, changes: Vec<Value>) -> Exchange {
        let ex = self.nodes[i].sync(&self.app, changes);
        assert_eq!(ex.status, 200, "{}", ex.body);
        self.unacked[i] = keys_of(&ex.changes());
        ex
    }

    fn apply(&mut self, op: &Op) {
        let n = self.nodes.len();
        match *op {
            Op::Register => self.register(),
            Op::Write { node, entity, done } => {
                let (t, u) = self.entities[entity].clone();
                let base = self.nodes[node % n].version_of(&t, &u);
                self.writes += 1;
                let status = if done { "done" } else { "open" };
                let mut data = json!({"status": status, "n": self.writes});
                if let Some(t) = TENANTS[(self.writes as usize) % TENANTS.len()] {
                    data["tenant"] = json!(t);
                }
                self.exchange(node % n, vec![upsert(&t, &u, base, data)]);
            }
            Op::Delete { node, entity } => {
                let (t, u) = self.entities[entity].clone();
                let base = self.nodes[node % n].version_of(&t, &u);
                self.exchange(node % n, vec![delete(&t, &u, base)]);
            }
            Op::Sync { node } => {
                self.exchange(node % n, vec![]);
            }
            Op::Patch { node, set } => {
                if self.scoped {
                    let id = self.nodes[node % n].id.clone();
                    let (s, body) = self.app.patch(
                        &format!("/api/sync/nodes/{id}"),
                        Some(ADMIN),
                        &json!({ "scopes": SCOPE_SETS[set] }),
                    );
                    assert_eq!(s, 200, "{body}");
                }
            }
            Op::Admin {
                entity,
                delete,
                tenant,
            } => {
                let (t, u) = &self.entities[entity];
                let path = format!("/api/sync/entities/{t}/{u}");
                let (s, body) = if delete {
                    self.app.delete(&path, Some(ADMIN))
                } else {
                    self.writes += 1;
                    let mut data = json!({"data": {"status": "open", "n": self.writes}});
                    if let (true, Some(t)) = (self.scoped, TENANTS[tenant]) {
                        data["data"]["tenant"] = json!(t);
                    }
                    self.app.put(&path, Some(ADMIN), &data)
                };
                // Deleting an entity that was never written is 404; nothing changes.
                assert!(s == 200 || (delete && s == 404), "{s} {body}");
            }
        }
    }

    /// Checks that the three encodings and the three HTTP views agree for every node, and
    /// returns each node's pending set (by node id).
    fn check(&mut self, context: &str) -> BTreeMap<String, BTreeSet<Key>> {
        let db = &mut *self.db;
        let list = store::nodes::list(db).unwrap();
        let log: Vec<Entity> = {
            use diesel::prelude::*;
            store::schema::entities::table.load(db).unwrap()
        };
        let views: Vec<View> = list
            .iter()
            .map(|n| {
                if self.scoped {
                    View::load(db, n).unwrap()
                } else {
                    View::unscoped(n)
                }
            })
            .collect();
        let one_pass = pending::counts_in_log(db, &views).unwrap();
        let (_, stats) = self.app.get("/api/sync/status", Some(ADMIN));
        let (_, listed) = self.app.get("/api/sync/nodes", Some(ADMIN));
        let mut sets = BTreeMap::new();
        for (n, v) in list.iter().zip(&views) {
            let at = format!(
                "{context}, node {} (c={}, r={})",
                n.code, n.acked_seq, n.registered_seq
            );
            // SQL: the rows, oldest first, one per entity.
            let rows = pending::log_entries(db, v, i64::MAX).unwrap();
            assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq), "{at}");
            let sql: BTreeSet<Key> = rows
                .iter()
                .map(|e| key(&e.entity_type, &e.entity_uuid))
                .collect();
            assert_eq!(sql.len(), rows.len(), "{at}: one row per entity");
            assert_eq!(
                pending::count_in_log(db, v).unwrap(),
                rows.len() as i64,
                "{at}: SQL COUNT vs SQL rows"
            );
            // The predicate, over the whole log.
            let predicate: BTreeSet<Key> = log
                .iter()
                .filter(|e| pending::in_log(e, v))
                .map(|e| key(&e.entity_type, &e.entity_uuid))
                .collect();
            assert_eq!(predicate, sql, "{at}: predicate vs SQL filter");
            // The one-pass formula.
            assert_eq!(
                one_pass[&n.id],
                rows.len() as i64,
                "{at}: one-pass count vs SQL filter"
            );
            // The queue: the log's entries plus the node's own rows, exits and losses, once
            // per entity (the extra entries exclude what the log already holds).
            let mut set = sql.clone();
            for (t, u) in pending::extra_entries(db, v).unwrap().into_keys() {
                assert!(!sql.contains(&key(&t, &u)), "{at}: {t}/{u} counted twice");
                set.insert(key(&t, &u));
            }
            let want = set.len() as i64;
            let (s, own) = self
                .app
                .get(&format!("/api/sync/status/{}", n.id), Some(ADMIN));
            assert_eq!(s, 200, "{own}");
            assert_eq!(own["pending_changes"], want, "{at}: node status");
            assert_eq!(
                stats["pending_counts"][&n.id]["pending_changes"], want,
                "{at}: hub statistics"
            );
            let in_list = listed["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["node_id"] == json!(n.id))
                .unwrap();
            assert_eq!(in_list["pending_changes"], want, "{at}: node list");
            sets.insert(n.id.clone(), set);
        }
        sets
    }

    /// Every node drains its queue; what it receives (with its unacknowledged last answer) must
    /// be exactly its pending set, and afterwards nothing is pending.
    fn drain_all(&mut self) {
        let pending = self.check("before draining");
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id.clone();
            let mut got = std::mem::take(&mut self.unacked[i]);
            loop {
                let ex = self.exchange(i, vec![]);
                got.extend(keys_of(&ex.changes()));
                if !ex.more() {
                    break;
                }
            }
            // Acknowledge the last answer: nothing may be left, so the next answer is empty.
            let ex = self.exchange(i, vec![]);
            assert!(
                ex.changes().is_empty(),
                "{}: {:?}",
                self.nodes[i].code,
                ex.packet
            );
            assert_eq!(
                got, pending[&id],
                "{}: received vs pending",
                self.nodes[i].code
            );
            let after = self.check(&format!("after {} drained", self.nodes[i].code));
            assert!(
                after[&id].is_empty(),
                "{}: {:?}",
                self.nodes[i].code,
                after[&id]
            );
        }
    }
}

proptest! {
    // Each case runs a server; 24 random logs of up to 40 steps stay well under 20 s in a
    // debug build. A failure shrinks to a short log, but bounded: every try starts a server.
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 300,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_three_encodings_of_the_pending_rule_agree_with_what_nodes_receive(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut w = World::new(false);
        for (step, op) in ops.iter().enumerate() {
            w.apply(op);
            w.check(&format!("step {step} ({op:?})"));
        }
        w.drain_all();
    }

    #[test]
    fn with_scopes_the_encodings_agree_with_what_nodes_receive(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut w = World::new(true);
        for (step, op) in ops.iter().enumerate() {
            w.apply(op);
            w.check(&format!("step {step} ({op:?})"));
        }
        w.drain_all();
    }
}
