//! Cross-protocol convergence (PROTOCOL §11): a packet node (the `starsync-node` library), a
//! delta-sync client (§11.2), a change-feed + REST client (§11.3) and a simple-push client
//! (§11.4) write concurrently to the same few entities. Afterwards every client that reads
//! holds exactly the server's state, and no version any of them wrote is lost silently: a write
//! its protocol reported as lost is in the history, the final state was written by a write that
//! was not lost, and an accepted write is the final state unless another accepted write of the
//! entity may have come after it.
//!
//! `STARSYNC_XPROTO_SEEDS` sets the number of seeds (default 2); a failure names its seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::node_e2e::lib_node;

const TYPE: &str = "Task";
const IDS: [&str; 5] = ["xp-0", "xp-1", "xp-2", "xp-3", "ns:xp.4"];
const ROUNDS: usize = 25;

/// What a protocol said about one write.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Accepted,
    /// Reported lost (the server's state stayed): its version must be in the history.
    Lost,
    /// The packet node's library does not report per change.
    Unreported,
}

#[derive(Debug, Clone)]
struct Write {
    /// Which protocol wrote it (shown when an assertion names the write).
    #[allow(dead_code)]
    client: &'static str,
    id: String,
    /// `None` for a delete.
    marker: Option<String>,
    sent: Instant,
    answered: Instant,
    outcome: Outcome,
}

/// A tiny deterministic generator (xorshift), one per client.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A pool entity, and whether to delete it (one write in 20).
    fn pick(&mut self) -> (&'static str, bool) {
        (IDS[self.below(IDS.len())], self.below(20) == 0)
    }
}

/// The state a reading client holds: id → data (`None`: deleted).
type Local = HashMap<String, Option<Value>>;

fn record(log: &Arc<Mutex<Vec<Write>>>, w: Write) {
    log.lock().unwrap().push(w);
}

fn data(marker: &str, client: &str) -> Value {
    json!({"w": marker, "by": client})
}

/// Strips the feed's bookkeeping from a record, leaving the entity's data.
fn feed_data(mut rec: Value) -> (String, Value) {
    let obj = rec.as_object_mut().unwrap();
    let id = obj.remove("id").unwrap().as_str().unwrap().to_string();
    obj.remove("updated_at");
    obj.remove("version");
    (id, rec)
}

// ---- the delta client -------------------------------------------------------------------------

struct Delta {
    token: String,
    last: Value,
    local: Local,
    versions: HashMap<String, u64>,
}

impl Delta {
    /// One request; applies `server_changes` and the conflicts' server data to `local`.
    fn call(&mut self, app: &TestApp, changes: Vec<Value>) -> Value {
        let (s, a) = app.post(
            "/api/sync/delta",
            Some(&self.token),
            &json!({"last_sync_at": self.last, "changes": changes, "device_id": "xp-phone"}),
        );
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["error_count"], 0, "{a}");
        for c in a["server_changes"].as_array().unwrap() {
            let id = c["entity_id"].as_str().unwrap().to_string();
            if let Some(v) = c["version"].as_u64() {
                self.versions.insert(id.clone(), v);
            }
            let d = (c["action"] != "delete").then(|| c["data"].clone());
            self.local.insert(id, d);
        }
        for c in a["conflicts"].as_array().unwrap() {
            let id = c["entity_id"].as_str().unwrap().to_string();
            self.versions
                .insert(id.clone(), c["server_version"].as_u64().unwrap());
            let d = (!c["server_data"].is_null()).then(|| c["server_data"].clone());
            self.local.insert(id, d);
        }
        self.last = a["last_sync_at"].clone();
        a
    }

    fn drain(&mut self, app: &TestApp) {
        for _ in 0..100 {
            if self.call(app, vec![])["has_more"] != true {
                return;
            }
        }
        panic!("delta sync never ended its pages");
    }
}

fn run_delta(app: &TestApp, mut c: Delta, seed: u64, log: Arc<Mutex<Vec<Write>>>) -> Delta {
    let mut rng = Rng(seed);
    c.drain(app);
    for round in 0..ROUNDS {
        let (id, delete) = rng.pick();
        let marker = format!("delta-{round}");
        let version = c.versions.get(id).copied().unwrap_or(0);
        let change = if delete {
            json!({"entity_type": TYPE, "entity_id": id, "action": "delete", "version": version})
        } else {
            json!({"entity_type": TYPE, "entity_id": id, "action": "update",
                   "data": data(&marker, "delta"), "version": version})
        };
        let sent = Instant::now();
        let a = c.call(app, vec![change]);
        let lost = a["conflicts"].as_array().unwrap().iter().any(|k| {
            k["entity_id"] == id && k["resolution"].as_str().unwrap().ends_with(":server")
        });
        if !lost {
            // Applied as sent: the client holds what it sent (the answer leaves its own
            // change out unless the server's state differs).
            let holds_other = a["server_changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["entity_id"] == id);
            if !holds_other {
                c.local
                    .insert(id.to_string(), (!delete).then(|| data(&marker, "delta")));
            }
        }
        record(
            &log,
            Write {
                client: "delta",
                id: id.to_string(),
                marker: (!delete).then_some(marker),
                sent,
                answered: Instant::now(),
                outcome: if lost {
                    Outcome::Lost
                } else {
                    Outcome::Accepted
                },
            },
        );
    }
    c
}

// ---- the feed + REST client ---------------------------------------------------------------

struct Feed {
    token: String,
    cursor: Option<String>,
    local: Local,
    versions: HashMap<String, u64>,
}

impl Feed {
    fn read(&mut self, app: &TestApp) {
        for _ in 0..100 {
            let q = match &self.cursor {
                Some(c) => format!("/api/sync/changes?since={c}&limit=3"),
                None => "/api/sync/changes?limit=3".to_string(),
            };
            let (s, page) = app.get(&q, Some(&self.token));
            assert_eq!(s, 200, "{page}");
            for rec in page["entities"][TYPE]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let v = rec["version"].as_u64().unwrap();
                let (id, d) = feed_data(rec);
                self.versions.insert(id.clone(), v);
                self.local.insert(id, Some(d));
            }
            for id in page["deleted"][TYPE]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                self.local.insert(id.as_str().unwrap().to_string(), None);
            }
            self.cursor = Some(page["cursor"].to_string());
            if page["has_more"] != true {
                return;
            }
        }
        panic!("the feed never ended its pages");
    }

    /// Takes the entity an answer carries (200, or a 409's `entity`).
    fn take(&mut self, e: &Value) {
        let id = e["entity_uuid"].as_str().unwrap().to_string();
        self.versions
            .insert(id.clone(), e["version"].as_u64().unwrap());
        let d = (e["deleted"] != true).then(|| e["data"].clone());
        self.local.insert(id, d);
    }
}

fn rest(
    app: &TestApp,
    method: &str,
    token: &str,
    id: &str,
    ver: u64,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = ureq::request(method, &app.url(&format!("/api/sync/entities/{TYPE}/{id}")))
        .set("Authorization", &format!("Bearer {token}"))
        .set("If-Match", &format!("\"{ver}\""));
    let result = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => {
            req = req.set("Accept", "application/json");
            req.call()
        }
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap())
}

fn run_feed(app: &TestApp, mut c: Feed, seed: u64, log: Arc<Mutex<Vec<Write>>>) -> Feed {
    let mut rng = Rng(seed);
    c.read(app);
    for round in 0..ROUNDS {
        let (id, delete) = rng.pick();
        let marker = format!("rest-{round}");
        let ver = c.versions.get(id).copied().unwrap_or(0);
        let sent = Instant::now();
        let (s, a) = if delete {
            rest(app, "DELETE", &c.token, id, ver, None)
        } else {
            rest(
                app,
                "PUT",
                &c.token,
                id,
                ver,
                Some(json!({"data": data(&marker, "rest")})),
            )
        };
        let outcome = match s {
            200 => {
                c.take(&a);
                Outcome::Accepted
            }
            409 => {
                assert!(
                    a["conflict_id"].is_string(),
                    "a lost REST write names its history row: {a}"
                );
                c.take(&a["entity"]);
                Outcome::Lost
            }
            other => panic!("REST {id} at If-Match {ver}: {other} {a}"),
        };
        record(
            &log,
            Write {
                client: "rest",
                id: id.to_string(),
                marker: (!delete).then_some(marker),
                sent,
                answered: Instant::now(),
                outcome,
            },
        );
        c.read(app);
    }
    c
}

// ---- the simple-push client ---------------------------------------------------------------

fn run_push(app: &TestApp, token: &str, seed: u64, log: Arc<Mutex<Vec<Write>>>) {
    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        let (id, delete) = rng.pick();
        let marker = format!("push-{round}");
        let row_id = format!("q-{round}");
        // A change queue's rows carry the time they were made; now and then one was made a
        // while ago (a phone that was offline), so older rows meet newer server states.
        let age = if rng.below(4) == 0 { 5_000 } else { 0 };
        let ts = chrono::Utc::now().timestamp_millis() - age;
        let row = json!({"id": row_id, "entity_id": id, "entity_type": TYPE,
            "action": if delete { "DELETE" } else { "UPDATE" },
            "payload": if delete { Value::Null } else { data(&marker, "push") },
            "timestamp": ts});
        let sent = Instant::now();
        let (s, a) = app.post("/api/sync/push", Some(token), &json!({"changes": [row]}));
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["errors"], json!([]), "{a}");
        let lost = a["conflicts"].as_array().unwrap().iter().any(|k| {
            k["change_id"] == row_id
                && k["conflict_resolution"]
                    .as_str()
                    .unwrap()
                    .ends_with(":server")
        });
        record(
            &log,
            Write {
                client: "push",
                id: id.to_string(),
                marker: (!delete).then_some(marker),
                sent,
                answered: Instant::now(),
                outcome: if lost {
                    Outcome::Lost
                } else {
                    Outcome::Accepted
                },
            },
        );
    }
}

// ---- the packet node ----------------------------------------------------------------------

fn run_node(node: &starsync_node::Node, seed: u64, log: Arc<Mutex<Vec<Write>>>) {
    let mut rng = Rng(seed);
    node.sync().unwrap();
    for round in 0..ROUNDS {
        let (id, delete) = rng.pick();
        let marker = format!("node-{round}");
        let sent = Instant::now();
        if delete {
            node.delete(TYPE, id).unwrap();
        } else {
            node.put(TYPE, id, &data(&marker, "node")).unwrap();
        }
        node.sync().unwrap();
        record(
            &log,
            Write {
                client: "node",
                id: id.to_string(),
                marker: (!delete).then_some(marker),
                sent,
                answered: Instant::now(),
                outcome: Outcome::Unreported,
            },
        );
    }
}

// ---- the run -------------------------------------------------------------------------------

fn one_seed(seed: u64) {
    let app = Arc::new(TestApp::spawn());
    // Every entity exists before the clients start, written by the hub.
    for id in IDS {
        let (s, b) = app.put(
            &format!("/api/sync/entities/{TYPE}/{id}"),
            Some(ADMIN),
            &json!({"data": data(&format!("seed-{id}"), "hub")}),
        );
        assert!(s == 200 || s == 201, "{s} {b}");
    }
    let node_dir = tempfile::tempdir().unwrap();
    let node = lib_node(node_dir.path(), &app.base, "XP-DESKTOP", 100);
    let delta = Delta {
        token: app.register("XP-DELTA").token,
        last: Value::Null,
        local: Local::new(),
        versions: HashMap::new(),
    };
    let feed = Feed {
        token: app.register("XP-REST").token,
        cursor: None,
        local: Local::new(),
        versions: HashMap::new(),
    };
    let push_token = app.register("XP-PUSH").token;
    let log = Arc::new(Mutex::new(Vec::new()));

    let (delta, feed) = std::thread::scope(|s| {
        let d = {
            let (app, log) = (app.clone(), log.clone());
            s.spawn(move || run_delta(&app, delta, seed ^ 0x9e37_79b9, log))
        };
        let f = {
            let (app, log) = (app.clone(), log.clone());
            s.spawn(move || run_feed(&app, feed, seed ^ 0x85eb_ca6b, log))
        };
        {
            let (app, log) = (app.clone(), log.clone());
            s.spawn(move || run_push(&app, &push_token, seed ^ 0xc2b2_ae35, log));
        }
        run_node(&node, seed ^ 0x27d4_eb2f, log.clone());
        (d.join().unwrap(), f.join().unwrap())
    });

    // Quiet: every reader catches up.
    let (mut delta, mut feed) = (delta, feed);
    node.sync().unwrap();
    node.sync().unwrap();
    delta.drain(&app);
    feed.read(&app);

    let writes = log.lock().unwrap().clone();
    let history = app.conflicts("?limit=1000");
    assert!(history.len() < 1000, "seed {seed}: history listing cut");
    for id in IDS {
        let (s, server) = app.entity(TYPE, id);
        assert_eq!(s, 200, "seed {seed}: {server}");
        let state: Option<Value> = (server["deleted"] != true).then(|| server["data"].clone());

        // Convergence: every reading client holds the server's state.
        let at_node = node
            .get(TYPE, id)
            .unwrap()
            .expect("the node has every entity");
        let node_state: Option<Value> =
            (!at_node.deleted).then(|| at_node.data.parse::<Value>().unwrap());
        assert_eq!(
            node_state, state,
            "seed {seed}: packet node differs on {id}"
        );
        assert_eq!(
            delta.local.get(id),
            Some(&state),
            "seed {seed}: delta client differs on {id}"
        );
        assert_eq!(
            feed.local.get(id),
            Some(&state),
            "seed {seed}: feed client differs on {id}"
        );
        // (A deletion in the feed names the id only, no version.)
        if let (Some(v), Some(_)) = (feed.versions.get(id), &state) {
            assert_eq!(
                Some(*v),
                server["version"].as_u64(),
                "seed {seed}: feed version of {id}"
            );
        }

        // No silent loss.
        let mine: Vec<&Write> = writes.iter().filter(|w| w.id == id).collect();
        let in_history = |m: &str| {
            history
                .iter()
                .any(|h| h["entity_uuid"] == id && h["serialized_data"]["w"] == m)
        };
        for w in mine.iter().filter(|w| w.outcome == Outcome::Lost) {
            if let Some(m) = &w.marker {
                assert!(
                    in_history(m),
                    "seed {seed}: {w:?} was reported lost but its version is not in the history"
                );
            }
        }
        if let Some(state) = &state {
            let m = state["w"].as_str().unwrap();
            assert!(
                m == format!("seed-{id}")
                    || mine
                        .iter()
                        .any(|w| w.outcome != Outcome::Lost && w.marker.as_deref() == Some(m)),
                "seed {seed}: {id} holds {state}, which no accepted write wrote"
            );
        }
        for w in mine.iter().filter(|w| w.outcome != Outcome::Lost) {
            let is_state = match (&w.marker, &state) {
                (None, None) => true,
                (Some(m), Some(s)) => s["w"] == m.as_str(),
                _ => false,
            };
            let maybe_later = mine.iter().any(|x| {
                x.outcome != Outcome::Lost && !std::ptr::eq(*x, *w) && x.answered > w.sent
            });
            let kept = w.marker.as_deref().is_some_and(in_history);
            assert!(
                is_state || maybe_later || kept,
                "seed {seed}: {w:?} was the last write of {id} that was not lost, but the \
                 server holds {server}"
            );
        }
    }
    let lost = writes.iter().filter(|w| w.outcome == Outcome::Lost).count();
    eprintln!(
        "seed {seed}: {} writes over 4 protocols on {} entities, {lost} reported lost, {} \
         history rows; all readers converged",
        writes.len(),
        IDS.len(),
        history.len()
    );
}

#[test]
fn four_protocols_writing_the_same_entities_converge_without_silent_loss() {
    let seeds: u64 = std::env::var("STARSYNC_XPROTO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for seed in 1..=seeds {
        one_seed(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    }
}
