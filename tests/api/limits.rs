//! Size limits that keep every node able to receive what it is sent (issue 8, items 1, 2, 7):
//! server packets bounded by bytes as well as by count, a per-entity size limit, bounded error
//! answers and duplicate reports, and exchanges that still complete under a tiny memory budget.
use crate::helpers::*;

use serde_json::{json, Value};

use starsync_protocol::codec;

const MIB: usize = 1024 * 1024;

/// A server whose nodes refuse packets over 4 MiB: the answer budget is 2 MiB, the entity
/// limit 1 MiB.
fn small_limits(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("STARSYNC_MAX_PACKET_BYTES", "4194304"),
        ("STARSYNC_MAX_ENTITY_BYTES", "1048576"),
    ];
    env.extend_from_slice(extra);
    TestApp::spawn_with("", &env)
}

/// Entity data whose JSON text (`{"pad":"…"}`) is exactly `bytes` long.
fn data_of(bytes: usize, fill: char) -> Value {
    json!({ "pad": fill.to_string().repeat(bytes - 10) })
}

/// The decompressed size of an answer's packet.
fn answer_packet_bytes(ex: &Exchange) -> usize {
    let gz = hex::decode(ex.body["packet_data"].as_str().unwrap()).unwrap();
    codec::inflate_limited(&gz, 1 << 30).unwrap().len()
}

/// The whole HTTP answer, as bytes of JSON.
fn answer_bytes(ex: &Exchange) -> usize {
    ex.body.to_string().len()
}

/// Exchanges until the server has nothing more, at most `max` times; checks every answer
/// against `budget` (decompressed) and returns the changes received and the exchange count.
fn drain_within(
    app: &TestApp,
    node: &mut TestNode,
    budget: usize,
    max: usize,
) -> (Vec<Value>, usize) {
    let mut got = Vec::new();
    for n in 1..=max {
        let ex = node.sync(app, vec![]);
        assert_eq!(ex.status, 200, "{}", ex.body);
        let size = answer_packet_bytes(&ex);
        assert!(
            size <= budget,
            "answer {n} decompresses to {size} bytes, over {budget}"
        );
        // What the node library does with it: decode through the limit.
        starsync_protocol::decode_hex_packet(ex.body["packet_data"].as_str().unwrap(), budget)
            .expect("the node can decode the answer within the budget");
        if ex.more() {
            assert!(
                !ex.changes().is_empty(),
                "a packet cut by its budget still moves"
            );
        }
        got.extend(ex.changes());
        if !ex.more() {
            return (got, n);
        }
    }
    panic!("{} still had more after {max} exchanges", node.code);
}

#[test]
fn large_entities_never_make_an_answer_exceed_the_budget() {
    let app = small_limits(&[]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    // Five entities of nearly 1 MiB: 5 MiB pending for B, over B's own 4 MiB packet limit.
    let big: Vec<(String, Value)> = (0..5)
        .map(|i| (new_uuid(), data_of(1_000_000, (b'a' + i) as char)))
        .collect();
    let small: Vec<(String, Value)> = (0..20).map(|i| (new_uuid(), json!({ "i": i }))).collect();
    let first: Vec<Value> = big[..3]
        .iter()
        .map(|(u, d)| upsert("Doc", u, 0, d.clone()))
        .collect();
    let ex = a.sync(&app, first);
    assert_eq!(ex.body["processed_count"], 3, "{}", ex.body);
    let second: Vec<Value> = big[3..]
        .iter()
        .chain(small.iter())
        .map(|(u, d)| upsert("Doc", u, 0, d.clone()))
        .collect();
    let ex = a.sync(&app, second);
    assert_eq!(ex.body["processed_count"], 22, "{}", ex.body);

    let (got, exchanges) = drain_within(&app, &mut b, 2 * MIB, 20);
    assert!(
        exchanges >= 3,
        "5 MiB in 2 MiB answers takes several: {exchanges}"
    );
    assert_eq!(got.len(), 25);
    for (u, d) in big.iter().chain(small.iter()) {
        let c = got
            .iter()
            .find(|c| c["entity_uuid"] == json!(u))
            .unwrap_or_else(|| panic!("B received {u}"));
        assert!(&c["data"] == d, "B received {u} exactly as written");
    }
    // Everything acknowledged: nothing left pending.
    b.sync(&app, vec![]);
    assert_eq!(app.node_status(&b)["pending_changes"], 0);
}

#[test]
fn an_entity_larger_than_the_budget_still_moves_alone() {
    // Stored while the limits were higher; then the operator lowers them.
    let mut app = TestApp::spawn_with(
        "",
        &[
            ("STARSYNC_MAX_PACKET_BYTES", "8388608"),
            ("STARSYNC_MAX_ENTITY_BYTES", "3145728"),
        ],
    );
    let mut a = app.register("A");
    let mut b = app.register("B");
    let (big, small) = (new_uuid(), new_uuid());
    let ex = a.sync(
        &app,
        vec![
            upsert("Doc", &big, 0, data_of(3_000_000, 'z')),
            upsert("Doc", &small, 0, json!({"s": 1})),
        ],
    );
    assert_eq!(ex.body["processed_count"], 2, "{}", ex.body);
    app.env
        .insert("STARSYNC_MAX_PACKET_BYTES".into(), "4194304".into());
    app.env
        .insert("STARSYNC_MAX_ENTITY_BYTES".into(), "1048576".into());
    let app = app.restart();

    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    let changes = ex.changes();
    assert_eq!(changes.len(), 1, "the oversized entity travels alone");
    assert_eq!(changes[0]["entity_uuid"], json!(big));
    assert!(ex.more());
    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.changes().len(), 1);
    assert_eq!(ex.changes()[0]["entity_uuid"], json!(small));
    assert!(!ex.more());
}

#[test]
fn an_entity_over_the_limit_is_rejected_and_the_rest_applied() {
    // Default limits: 8 MiB entities.
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let (over, at, small) = (new_uuid(), new_uuid(), new_uuid());
    let over_change = upsert("Doc", &over, 0, data_of(8 * MIB + 1, 'o'));
    let over_id = over_change["change_id"].clone();
    let ex = a.sync(
        &app,
        vec![
            over_change,
            upsert("Doc", &at, 0, data_of(8 * MIB, 'a')),
            upsert("Doc", &small, 0, json!({"s": true})),
        ],
    );
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 2, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 1, "{}", ex.body);
    let e = &ex.body["errors"][0];
    assert_eq!(e["change_id"], over_id);
    assert_eq!(e["error"], "invalid_change");
    assert_eq!(e["reason"], "entity_too_large");
    assert!(
        e["message"].as_str().unwrap().contains("8388608"),
        "the message names the limit: {e}"
    );
    assert_eq!(app.entity("Doc", &over).0, 404);
    let (s, view) = app.entity("Doc", &at);
    assert_eq!(s, 200);
    assert_eq!(view["data"]["pad"].as_str().unwrap().len(), 8 * MIB - 10);
    assert_eq!(app.entity("Doc", &small).0, 200);
}

#[test]
fn admin_writes_over_the_entity_limit_are_413_and_change_nothing() {
    let app = TestApp::spawn_with(
        "[conflicts.types.Ticket]\nstrategy = \"manual\"\n",
        &[("STARSYNC_MAX_ENTITY_BYTES", "4096")],
    );
    let u = new_uuid();
    let path = format!("/api/sync/entities/Doc/{u}");
    let (s, r) = app.put(&path, Some(ADMIN), &json!({"data": data_of(4097, 'x')}));
    assert_eq!(s, 413, "{r}");
    assert_eq!(r["error"], "entity_too_large", "{r}");
    assert!(r["message"].as_str().unwrap().contains("4096"), "{r}");
    assert_eq!(app.entity("Doc", &u).0, 404);
    let (s, r) = app.put(&path, Some(ADMIN), &json!({"data": data_of(4096, 'x')}));
    assert_eq!(s, 200, "{r}");

    // A manual conflict, resolved with data over the limit: refused the same way.
    let mut a = app.register("A");
    let mut b = app.register("B");
    let t = new_uuid();
    assert_eq!(
        a.sync(&app, vec![upsert("Ticket", &t, 0, json!({"v": 0}))])
            .status,
        200
    );
    b.drain(&app);
    a.sync(&app, vec![upsert("Ticket", &t, 1, json!({"v": "a"}))]);
    let ex = b.sync(&app, vec![upsert("Ticket", &t, 1, json!({"v": "b"}))]);
    let id = ex.body["conflicts"][0]["conflict_id"]
        .as_str()
        .unwrap()
        .to_string();
    let resolve = format!("/api/sync/conflicts/{id}/resolve");
    let (s, r) = app.post(&resolve, Some(ADMIN), &json!({"data": data_of(5000, 'r')}));
    assert_eq!(s, 413, "{r}");
    assert_eq!(r["error"], "entity_too_large", "{r}");
    assert_eq!(app.conflicts("?unresolved=true").len(), 1);
    let (s, r) = app.post(&resolve, Some(ADMIN), &json!({"data": {"v": "admin"}}));
    assert_eq!(s, 200, "{r}");
}

#[test]
fn a_size_chain_that_cannot_deliver_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_starsync"))
        .arg("migrate")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STARSYNC_MAX_PACKET_BYTES", "1048576")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("STARSYNC_MAX_ENTITY_BYTES to at most 458752"),
        "the error says what to change: {err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn exported_files_obey_the_answer_budget() {
    let app = small_limits(&[]);
    let mut a = app.register("A");
    app.register("B");
    let changes: Vec<Value> = (0..3)
        .map(|i| {
            upsert(
                "Doc",
                &new_uuid(),
                0,
                data_of(1_000_000, (b'a' + i) as char),
            )
        })
        .collect();
    assert_eq!(a.sync(&app, changes).body["processed_count"], 3);
    let out = tempfile::tempdir().unwrap();
    let o = app.cli(&[
        "--json",
        "export",
        "--node",
        "B",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["changes"], 2, "{r}");
    assert_eq!(r["more"], true, "{r}");
    let gz = std::fs::read(out.path().join("server-to-B-00000001.syncpkt")).unwrap();
    let size = codec::inflate_limited(&gz, 1 << 30).unwrap().len();
    assert!(size <= 2 * MIB, "the file decompresses to {size} bytes");
}

#[test]
fn oversized_invalid_fields_get_a_bounded_answer_and_duplicate() {
    // 60 invalid values of 1 MiB: types, ids and change ids, 20 each (60 MiB decompressed,
    // under the 64 MiB packet limit, a small gzip body).
    let app = TestApp::spawn();
    let a = app.register("A");
    let huge = |c: char| c.to_string().repeat(MIB);
    let mut changes = Vec::new();
    for i in 0..60 {
        let mut c = upsert("Doc", &new_uuid(), 0, json!({"i": i}));
        match i % 3 {
            0 => c["entity_type"] = json!(huge('-')),
            1 => c["entity_uuid"] = json!(huge('U')),
            _ => c["change_id"] = json!(huge('c')),
        }
        changes.push(c);
    }
    let p = a.packet(1, 0, changes);
    let ex = a.post_packet(&app, &p);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 60);
    let errors = ex.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 60);
    for e in errors {
        for f in ["change_id", "entity_type", "entity_uuid", "message"] {
            let n = e[f].as_str().unwrap().chars().count();
            assert!(n <= 256, "{f} echoed with {n} characters");
        }
        for f in ["change_id", "entity_type", "entity_uuid"] {
            let v = e[f].as_str().unwrap();
            assert!(v.chars().count() <= 128, "{f}: {v}");
        }
    }
    assert!(errors[0]["entity_type"].as_str().unwrap().ends_with('…'));
    let size = answer_bytes(&ex);
    assert!(size < 64 * 1024, "the answer is {size} bytes");

    // The duplicate repeats the same bounded answer from the stored report.
    let dup = a.post_packet(&app, &p);
    assert_eq!(dup.status, 200, "{}", dup.body);
    assert_eq!(dup.body["duplicate"], true);
    assert_eq!(dup.body["errors"], ex.body["errors"]);
    assert!(answer_bytes(&dup) < 64 * 1024);
}

#[test]
fn error_lists_stop_at_1000_and_the_counts_say_how_many() {
    let app = TestApp::spawn();
    let a = app.register("A");
    let changes: Vec<Value> = (0..1500)
        .map(|_| upsert("1bad", &new_uuid(), 0, json!({})))
        .collect();
    let p = a.packet(1, 0, changes);
    for duplicate in [false, true] {
        let ex = a.post_packet(&app, &p);
        assert_eq!(ex.status, 200, "{}", ex.body);
        assert_eq!(ex.body["duplicate"], duplicate);
        assert_eq!(ex.body["error_count"], 1500);
        assert_eq!(ex.body["errors"].as_array().unwrap().len(), 1000);
        assert!(
            ex.body["message"].as_str().unwrap().contains("1500") || duplicate,
            "{}",
            ex.body["message"]
        );
    }
}

#[test]
fn a_tiny_memory_budget_serializes_large_exchanges_without_blocking_them() {
    // 1 MiB for everything in flight: every exchange of a ~1 MiB entity takes a whole pool.
    let app = small_limits(&[("STARSYNC_MAX_INFLIGHT_BYTES", "1048576")]);
    let mut nodes: Vec<TestNode> = (0..4).map(|i| app.register(&format!("N{i}"))).collect();
    let uuids: Vec<String> = (0..4).map(|_| new_uuid()).collect();
    std::thread::scope(|s| {
        for (i, node) in nodes.iter_mut().enumerate() {
            let (app, u) = (&app, &uuids[i]);
            s.spawn(move || {
                let ex = node.sync(app, vec![upsert("Doc", u, 0, data_of(1_000_000, 'm'))]);
                assert_eq!(ex.body["processed_count"], 1, "{}", ex.body);
            });
        }
    });
    std::thread::scope(|s| {
        for node in nodes.iter_mut() {
            let app = &app;
            s.spawn(move || {
                drain_within(app, node, 2 * MIB, 20);
            });
        }
    });
    for node in &nodes {
        for u in &uuids {
            let key = ("Doc".to_string(), u.clone());
            let own = !node.entities.contains_key(&key);
            // Each node holds every other node's entity (its own was never echoed).
            assert!(
                own || node.entities[&key].1["pad"].as_str().unwrap().len() == 999_990,
                "{} holds {u}",
                node.code
            );
        }
        let others = uuids
            .iter()
            .filter(|u| {
                node.entities
                    .contains_key(&("Doc".to_string(), (*u).clone()))
            })
            .count();
        assert_eq!(others, 3, "{} received the other three", node.code);
    }
}
