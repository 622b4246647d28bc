//! HTTP errors (PROTOCOL §6), black-box: every error code with its status and a JSON
//! `{error, message}` body, and "a rejected request changes nothing".
use crate::helpers::*;

use std::io::Write;

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// Asserts an error answer: the status, the code, and a JSON body `{error, message}`.
#[track_caller]
fn assert_error(got: (u16, &Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "expected {status} {code}, got {s}: {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    assert_eq!(obj.get("error"), Some(&json!(code)), "{body}");
    assert!(
        obj.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.trim().is_empty()),
        "error without a message: {body}"
    );
}

#[track_caller]
fn assert_ex_error(ex: &Exchange, status: u16, code: &str) {
    assert_error((ex.status, &ex.body), status, code);
}

/// Everything a rejected exchange must leave alone.
fn counters(app: &TestApp, node: &TestNode) -> Value {
    let s = app.node_status(node);
    json!({
        "sent_packet_no": s["sent_packet_no"],
        "received_packet_no": s["received_packet_no"],
        "acked_packet_no": s["acked_packet_no"],
        "last_sync_in": s["last_sync_in"],
        "last_sync_out": s["last_sync_out"],
        "pending_changes": s["pending_changes"],
        "active": s["active"],
    })
}

fn entity_exists(app: &TestApp, t: &str, u: &str) -> bool {
    match app.entity(t, u) {
        (200, _) => true,
        (404, _) => false,
        (s, b) => panic!("{s} {b}"),
    }
}

fn exchange_raw(app: &TestApp, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    app.post_raw("/api/sync/exchange", token, body)
}

fn envelope(hex_text: &str) -> Vec<u8> {
    json!({ "packet_data": hex_text }).to_string().into_bytes()
}

/// A node that has exchanged once (so its counters are not all zero) and a peer with a
/// pending entity for it.
fn setup() -> (TestApp, TestNode, TestNode) {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let ex = a.sync(&app, vec![upsert("Doc", &new_uuid(), 0, json!({"x": 1}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    let ex = a.sync(&app, vec![upsert("Doc", &new_uuid(), 0, json!({"x": 2}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    (app, a, b)
}

fn node_count(app: &TestApp) -> usize {
    let (s, body) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(s, 200, "{body}");
    body["nodes"].as_array().unwrap().len()
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

#[test]
fn register_errors() {
    let app = TestApp::spawn();
    let node = app.register("FIRST");
    let reg = |token: Option<&str>, body: &[u8]| app.post_raw("/api/sync/register", token, body);

    // 400: not JSON.
    for body in [&b"not json"[..], b"{\"code\": ", b""] {
        let (s, b) = reg(Some(ADMIN), body);
        assert_error((s, &b), 400, "invalid_request");
    }
    // 401: no token, a wrong token, a node token while registration is closed.
    let ok_body = json!({"code": "NEWCODE"}).to_string();
    for token in [None, Some("wrong-token"), Some(node.token.as_str())] {
        let (s, b) = reg(token, ok_body.as_bytes());
        assert_error((s, &b), 401, "unauthorized");
    }
    // 409: code taken.
    let (s, b) = reg(Some(ADMIN), json!({"code": "FIRST"}).to_string().as_bytes());
    assert_error((s, &b), 409, "code_taken");
    // 422: missing code, bad characters, wrong types.
    let long = "x".repeat(65);
    for body in [
        json!({}),
        json!({"name": "no code"}),
        json!({"code": ""}),
        json!({"code": "has space"}),
        json!({"code": "slash/es"}),
        json!({"code": "ümlaut"}),
        json!({"code": long}),
        json!({"code": 5}),
        json!({"code": null}),
        json!({"code": ["A"]}),
        json!({"code": "OKCODE", "name": 7}),
        json!({"code": "OKCODE", "description": {"a": 1}}),
        json!([{"code": "OKCODE"}]),
        json!("OKCODE"),
    ] {
        let (s, b) = reg(Some(ADMIN), body.to_string().as_bytes());
        assert_error((s, &b), 422, "invalid_request");
    }
    assert_eq!(
        node_count(&app),
        1,
        "a rejected registration created a node"
    );

    // The boundaries that are valid.
    let (s, b) = reg(
        Some(ADMIN),
        json!({"code": "a.b_c-D9"}).to_string().as_bytes(),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = reg(
        Some(ADMIN),
        json!({"code": "y".repeat(64)}).to_string().as_bytes(),
    );
    assert_eq!(s, 201, "{b}");
    for k in [
        "node_id",
        "auth_token",
        "server_node_id",
        "server_version",
        "schema_version",
    ] {
        assert!(b[k].is_string(), "register answer lacks {k}: {b}");
    }
    assert_eq!(b["server_node_id"], json!(app.server_id));
    assert_eq!(b["schema_version"], "1.0.0");
    assert_eq!(node_count(&app), 3);
}

#[test]
fn open_registration_needs_no_token() {
    let app = TestApp::spawn_with("", &[("STARSYNC_OPEN_REGISTRATION", "true")]);
    let (s, body) = app.post("/api/sync/register", None, &json!({"code": "OPEN-1"}));
    assert_eq!(s, 201, "{body}");
    let token = body["auth_token"].as_str().unwrap().to_string();
    assert!(token.len() >= 43, "token too short for 256 bits: {token}");
    let mut n = TestNode {
        id: body["node_id"].as_str().unwrap().to_string(),
        token,
        code: "OPEN-1".into(),
        server_id: app.server_id.clone(),
        next_packet_no: 1,
        acked: 0,
        entities: Default::default(),
    };
    let ex = n.sync(&app, vec![upsert("Doc", &new_uuid(), 0, json!({}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["processed_count"], 1);
    // Input is still validated, and admin routes still need the admin token.
    let (s, b) = app.post("/api/sync/register", None, &json!({"code": "bad code"}));
    assert_error((s, &b), 422, "invalid_request");
    let (s, b) = app.post("/api/sync/register", None, &json!({"code": "OPEN-1"}));
    assert_error((s, &b), 409, "code_taken");
    let (s, b) = app.get("/api/sync/nodes", None);
    assert_error((s, &b), 401, "unauthorized");
}

// ---------------------------------------------------------------------------------------------
// Exchange: malformed packets
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_packets_are_invalid_packet_and_change_nothing() {
    let (app, mut a, b) = setup();
    let before = counters(&app, &b);
    let before_a = counters(&app, &a);
    let probe = new_uuid();

    // A valid next packet (2, acknowledging 1) with one valid change: each case breaks it.
    let good = || b.packet(2, 1, vec![upsert("Doc", &probe, 0, json!({"probe": true}))]);
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("envelope not JSON".into(), b"packet_data=abc".to_vec()),
        ("empty body".into(), Vec::new()),
        ("envelope without packet_data".into(), b"{}".to_vec()),
        (
            "packet_data null".into(),
            br#"{"packet_data": null}"#.to_vec(),
        ),
        (
            "packet_data a number".into(),
            br#"{"packet_data": 5}"#.to_vec(),
        ),
        ("envelope an array".into(), b"[]".to_vec()),
        ("not hex".into(), envelope("zz-not-hex")),
        ("odd hex".into(), envelope("abc")),
        ("empty packet_data".into(), envelope("")),
        (
            "hex of plain JSON (not gzip)".into(),
            envelope(&hex::encode(good().to_string())),
        ),
        (
            "gzip header then garbage".into(),
            envelope(&hex::encode([0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7])),
        ),
        (
            "truncated gzip".into(),
            envelope(&{
                let full = encode(&good());
                full[..full.len() / 2].to_string()
            }),
        ),
        (
            "gzip of non-JSON".into(),
            envelope(&hex::encode(starsync_protocol::codec::gzip_bytes(
                b"hello, not json",
            ))),
        ),
        (
            "gzip of a JSON array".into(),
            envelope(&hex::encode(starsync_protocol::codec::gzip_bytes(b"[1,2]"))),
        ),
    ];

    let mut packets: Vec<(String, Value)> = Vec::new();
    for field in [
        "format",
        "schema_version",
        "sender_node_id",
        "receiver_node_id",
        "packet_no",
        "ack_packet_no",
        "created_at",
        "changes",
    ] {
        let mut p = good();
        p.as_object_mut().unwrap().remove(field);
        packets.push((format!("missing {field}"), p));
    }
    let max_safe = (1u64 << 53) - 1;
    for (field, value) in [
        ("format", json!(2)),
        ("format", json!(0)),
        ("format", json!("1")),
        ("format", Value::Null),
        ("schema_version", json!(1)),
        ("schema_version", Value::Null),
        ("sender_node_id", json!(42)),
        ("receiver_node_id", Value::Null),
        ("packet_no", json!(0)),
        ("packet_no", json!(-2)),
        ("packet_no", json!("2")),
        ("packet_no", json!(2.5)),
        ("packet_no", json!(max_safe + 1)),
        ("packet_no", Value::Null),
        ("ack_packet_no", json!(-1)),
        ("ack_packet_no", json!(max_safe + 1)),
        ("ack_packet_no", json!(1e300)),
        ("ack_packet_no", json!("1")),
        ("created_at", json!(1234)),
        ("more", json!("yes")),
        ("more", json!(1)),
        ("changes", json!({})),
        ("changes", Value::Null),
        ("changes", json!("[]")),
    ] {
        let mut p = good();
        p[field] = value.clone();
        packets.push((format!("{field} = {value}"), p));
    }
    // Change elements that are not objects.
    for value in [json!(5), json!("change"), Value::Null, json!([1])] {
        let mut p = good();
        p["changes"].as_array_mut().unwrap().push(value.clone());
        packets.push((format!("change element {value}"), p));
    }
    // A change lacking a field, or with a field of the wrong JSON type.
    for field in [
        "change_id",
        "entity_type",
        "entity_uuid",
        "operation",
        "base_version",
        "version",
        "updated_at",
        "data",
    ] {
        let mut p = good();
        let mut c = upsert("Doc", &new_uuid(), 0, json!({}));
        c.as_object_mut().unwrap().remove(field);
        p["changes"].as_array_mut().unwrap().push(c);
        packets.push((format!("change lacks {field}"), p));
    }
    for (field, value) in [
        ("change_id", json!(5)),
        ("entity_type", json!(["Doc"])),
        ("entity_uuid", json!(7)),
        ("operation", json!(1)),
        ("operation", Value::Null),
        ("base_version", json!("0")),
        ("base_version", json!(-1)),
        ("base_version", json!(max_safe + 1)),
        ("version", json!("1")),
        ("version", json!(max_safe + 1)),
        ("updated_at", json!(12)),
        ("updated_at", Value::Null),
    ] {
        let mut p = good();
        let mut c = upsert("Doc", &new_uuid(), 0, json!({}));
        c[field] = value.clone();
        p["changes"].as_array_mut().unwrap().push(c);
        packets.push((format!("change {field} = {value}"), p));
    }
    for (name, p) in &packets {
        bodies.push((name.clone(), envelope(&encode(p))));
    }

    for (name, body) in &bodies {
        let (s, resp) = exchange_raw(&app, Some(&b.token), body);
        assert_eq!(s, 400, "{name}: expected 400, got {s} {resp}");
        assert_error((s, &resp), 400, "invalid_packet");
        assert_eq!(
            counters(&app, &b),
            before,
            "{name}: the rejected packet changed state"
        );
    }
    assert!(!entity_exists(&app, "Doc", &probe));
    assert_eq!(counters(&app, &a), before_a);

    // The same packet, well-formed, is applied as packet 2.
    let ex = b.post_packet(&app, &good());
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["duplicate"], false);
    assert_eq!(ex.body["processed_count"], 1);
    assert!(entity_exists(&app, "Doc", &probe));
    // `more` may be omitted.
    let mut p = b.packet(3, 2, vec![]);
    p.as_object_mut().unwrap().remove("more");
    let ex = b.post_packet(&app, &p);
    assert_eq!(ex.status, 200, "{}", ex.body);
    let ex = a.sync(&app, vec![]);
    assert_eq!(ex.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Exchange: authentication and addressing
// ---------------------------------------------------------------------------------------------

#[test]
fn exchange_needs_a_valid_active_node_token() {
    let (app, a, b) = setup();
    let before = counters(&app, &b);
    let probe = new_uuid();
    let body =
        json!({"packet_data": encode(&b.packet(2, 1, vec![upsert("Doc", &probe, 0, json!({}))]))})
            .to_string();

    for token in [
        None,
        Some(""),
        Some("sst_0000000000000000000000000000000000000000000000000000000000000000"),
        Some(ADMIN),
    ] {
        let (s, r) = exchange_raw(&app, token, body.as_bytes());
        assert_error((s, &r), 401, "unauthorized");
    }
    // Not a bearer scheme.
    let resp = ureq::post(&app.url("/api/sync/exchange"))
        .set("Authorization", &format!("Basic {}", b.token))
        .set("Content-Type", "application/json")
        .send_string(&body);
    match resp {
        Err(ureq::Error::Status(401, r)) => {
            let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert_error((401, &v), 401, "unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    // Another node's token with this node's packet: the sender is not the caller (403).
    let (s, r) = exchange_raw(&app, Some(&a.token), body.as_bytes());
    assert_error((s, &r), 403, "forbidden");
    assert_eq!(counters(&app, &b), before);
    assert!(!entity_exists(&app, "Doc", &probe));

    // Disabled: 401; enabled again: works.
    let (s, r) = app.post(
        &format!("/api/sync/nodes/{}/disable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{r}");
    let (s, r) = exchange_raw(&app, Some(&b.token), body.as_bytes());
    assert_error((s, &r), 401, "unauthorized");
    let mut expect = before.clone();
    expect["active"] = json!(false);
    assert_eq!(counters(&app, &b), expect);
    let (s, r) = app.get(&format!("/api/sync/status/{}", b.id), Some(&b.token));
    assert_error((s, &r), 401, "unauthorized");
    let (s, r) = app.post(
        &format!("/api/sync/nodes/{}/enable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["active"], true);
    assert_eq!(counters(&app, &b), before);

    // Rotated token: the old one stops at once, the new one works.
    let (s, r) = app.post(
        &format!("/api/sync/nodes/{}/token", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["node_id"], json!(b.id));
    let new_token = r["auth_token"].as_str().unwrap().to_string();
    assert_ne!(new_token, b.token);
    let (s, r) = exchange_raw(&app, Some(&b.token), body.as_bytes());
    assert_error((s, &r), 401, "unauthorized");
    let (s, r) = app.get(&format!("/api/sync/status/{}", b.id), Some(&b.token));
    assert_error((s, &r), 401, "unauthorized");
    assert_eq!(counters(&app, &b), before);
    assert!(!entity_exists(&app, "Doc", &probe));

    let (s, r) = exchange_raw(&app, Some(&new_token), body.as_bytes());
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["processed_count"], 1);
    assert!(entity_exists(&app, "Doc", &probe));
}

#[test]
fn wrong_sender_or_receiver_is_forbidden() {
    let (app, a, b) = setup();
    let before_a = counters(&app, &a);
    let before_b = counters(&app, &b);
    let probe = new_uuid();
    let change = || vec![upsert("Doc", &probe, 0, json!({}))];

    // sender_node_id names another node.
    let mut p = b.packet(2, 1, change());
    p["sender_node_id"] = json!(a.id);
    assert_ex_error(&b.post_packet(&app, &p), 403, "forbidden");
    // receiver_node_id is not the server: an unknown id, the node itself, another node.
    for receiver in [new_uuid(), b.id.clone(), a.id.clone()] {
        let mut p = b.packet(2, 1, change());
        p["receiver_node_id"] = json!(receiver);
        assert_ex_error(&b.post_packet(&app, &p), 403, "forbidden");
    }
    assert_eq!(counters(&app, &a), before_a);
    assert_eq!(counters(&app, &b), before_b);
    assert!(!entity_exists(&app, "Doc", &probe));
}

#[test]
fn schema_major_mismatch_is_refused_minor_differences_accepted() {
    let (app, _a, mut b) = setup();
    let before = counters(&app, &b);
    let probe = new_uuid();
    for v in ["2.0.0", "0.9.0", "10", "11.0.0"] {
        let mut p = b.packet(2, 1, vec![upsert("Doc", &probe, 0, json!({}))]);
        p["schema_version"] = json!(v);
        let ex = b.post_packet(&app, &p);
        assert_ex_error(&ex, 409, "schema_mismatch");
        assert_eq!(counters(&app, &b), before, "schema {v}");
    }
    assert!(!entity_exists(&app, "Doc", &probe));
    for (i, v) in ["1.5.3", "1.0.1", "1"].iter().enumerate() {
        let mut p = b.packet(2 + i as u64, b.acked, vec![]);
        p["schema_version"] = json!(v);
        let ex = b.post_packet(&app, &p);
        assert_eq!(ex.status, 200, "schema {v}: {}", ex.body);
        b.apply(ex.packet.as_ref().unwrap());
    }
}

#[test]
fn acknowledging_a_packet_never_sent_is_invalid_ack() {
    let (app, _a, b) = setup();
    let before = counters(&app, &b);
    assert_eq!(before["sent_packet_no"], 1);
    let probe = new_uuid();
    for ack in [2u64, 5, 1 << 40] {
        let ex = b.post_packet(
            &app,
            &b.packet(2, ack, vec![upsert("Doc", &probe, 0, json!({}))]),
        );
        assert_ex_error(&ex, 422, "invalid_ack");
        assert_eq!(counters(&app, &b), before);
    }
    assert!(!entity_exists(&app, "Doc", &probe));
    // Acknowledging what was sent is fine.
    let ex = b.post_packet(
        &app,
        &b.packet(2, 1, vec![upsert("Doc", &probe, 0, json!({}))]),
    );
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert!(entity_exists(&app, "Doc", &probe));
    assert_eq!(app.node_status(&b)["acked_packet_no"], 1);
}

// ---------------------------------------------------------------------------------------------
// Exchange: size limits
// ---------------------------------------------------------------------------------------------

#[test]
fn body_over_the_limit_is_packet_too_large() {
    let app = TestApp::spawn_with("", &[("STARSYNC_MAX_BODY_BYTES", "4096")]);
    let mut b = app.register("B");
    assert_eq!(b.sync(&app, vec![]).status, 200);
    let before = counters(&app, &b);
    let probe = new_uuid();
    // Incompressible data: many random uuids.
    let noise: Vec<String> = (0..300).map(|_| new_uuid()).collect();
    let p = b.packet(
        2,
        1,
        vec![upsert("Doc", &probe, 0, json!({ "noise": noise }))],
    );
    let body = json!({"packet_data": encode(&p)}).to_string();
    assert!(body.len() > 4096 && body.len() < 200_000, "{}", body.len());

    // With Content-Length.
    let (s, r) = exchange_raw(&app, Some(&b.token), body.as_bytes());
    assert_error((s, &r), 413, "packet_too_large");
    assert_eq!(counters(&app, &b), before);
    // Chunked, without Content-Length: stopped while reading.
    let resp = ureq::post(&app.url("/api/sync/exchange"))
        .set("Authorization", &format!("Bearer {}", b.token))
        .set("Content-Type", "application/json")
        .send(std::io::Cursor::new(body.clone().into_bytes()));
    let (s, r) = match resp {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    };
    let r: Value = serde_json::from_str(&r).unwrap_or(Value::String(r));
    assert_error((s, &r), 413, "packet_too_large");
    assert_eq!(counters(&app, &b), before);
    assert!(!entity_exists(&app, "Doc", &probe));

    // A small packet still works.
    let ex = b.sync(&app, vec![upsert("Doc", &probe, 0, json!({"small": true}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert!(entity_exists(&app, "Doc", &probe));
}

#[test]
fn packet_over_the_decompressed_limit_is_packet_too_large() {
    // The entity limit must fit in half of the packet limit (the answer budget).
    let app = TestApp::spawn_with(
        "",
        &[
            ("STARSYNC_MAX_PACKET_BYTES", "1048576"),
            ("STARSYNC_MAX_ENTITY_BYTES", "458752"),
        ],
    );
    let mut b = app.register("B");
    assert_eq!(b.sync(&app, vec![]).status, 200);
    let before = counters(&app, &b);
    let probe = new_uuid();
    // Valid packet JSON of ~2 MiB that compresses to a few KiB.
    let p = b.packet(
        2,
        1,
        vec![upsert(
            "Doc",
            &probe,
            0,
            json!({"pad": "a".repeat(2 << 20)}),
        )],
    );
    let ex = b.post_packet(&app, &p);
    assert_ex_error(&ex, 413, "packet_too_large");
    assert_eq!(counters(&app, &b), before);
    assert!(!entity_exists(&app, "Doc", &probe));
    // Just under the limit is fine: applied in full, byte for byte (two entities, each under
    // the entity limit that a 1 MiB packet limit implies).
    let pad = "a".repeat(440_000);
    let ex = b.sync(
        &app,
        vec![
            upsert("Doc", &probe, 0, json!({"pad": pad})),
            upsert("Doc", &new_uuid(), 0, json!({"pad": "b".repeat(440_000)})),
        ],
    );
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(
        (
            ex.body["processed_count"].clone(),
            ex.body["error_count"].clone()
        ),
        (json!(2), json!(0)),
        "{}",
        ex.body
    );
    let (s, stored) = app.entity("Doc", &probe);
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["version"], 1);
    // (Compared without printing 440 KB on failure.)
    assert!(
        stored["data"] == json!({"pad": pad}),
        "stored data differs: {} bytes of JSON",
        stored["data"].to_string().len()
    );
}

#[test]
fn gzip_bomb_is_stopped_while_inflating() {
    // Default limits: 16 MiB body, 64 MiB decompressed.
    let app = TestApp::spawn();
    let mut b = app.register("B");
    assert_eq!(b.sync(&app, vec![]).status, 200);
    let before = counters(&app, &b);

    // 200 MiB of zeros, gzipped in a stream so this test never holds them in memory.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..200 {
        enc.write_all(&chunk).unwrap();
    }
    let gz = enc.finish().unwrap();
    assert!(gz.len() < 4 << 20, "{}", gz.len());
    let gz_len = gz.len();
    let body = envelope(&hex::encode(&gz));
    drop(gz);

    // How far the decoder inflates before it stops is asserted on the codec's own counts in
    // crates/starsync-protocol/tests/gzip_bomb.rs; here: the server refuses it cleanly.
    let (s, r) = exchange_raw(&app, Some(&b.token), &body);
    assert_error((s, &r), 413, "packet_too_large");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("decompresses to more than"),
        "{gz_len} gzip bytes: {r}"
    );
    assert_eq!(counters(&app, &b), before);
    let (s, r) = app.get("/health", None);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "ok");
    // The node carries on.
    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
}

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

#[test]
fn node_status_access_rules() {
    let (app, a, b) = setup();
    let path = |id: &str| format!("/api/sync/status/{id}");
    let (s, r) = app.get(&path(&b.id), Some(&b.token));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["node_id"], json!(b.id));
    let (s, r) = app.get(&path(&a.id), Some(&b.token));
    assert_error((s, &r), 403, "forbidden");
    let (s, r) = app.get(&path(&new_uuid()), Some(ADMIN));
    assert_error((s, &r), 404, "not_found");
    let (s, r) = app.get(&path("not-a-uuid"), Some(ADMIN));
    assert_error((s, &r), 404, "not_found");
    let (s, r) = app.get(&path(&b.id), None);
    assert_error((s, &r), 401, "unauthorized");
    let (s, r) = app.get(&path(&b.id), Some("nope"));
    assert_error((s, &r), 401, "unauthorized");
}

// ---------------------------------------------------------------------------------------------
// Admin routes
// ---------------------------------------------------------------------------------------------

#[test]
fn admin_routes_need_the_admin_token() {
    let (app, a, b) = setup();
    let fake_conflict = new_uuid();
    let gets = [
        "/api/sync/status".to_string(),
        "/api/sync/nodes".to_string(),
    ];
    let posts = [
        format!("/api/sync/nodes/{}/disable", a.id),
        format!("/api/sync/nodes/{}/enable", a.id),
        format!("/api/sync/nodes/{}/token", a.id),
        format!("/api/sync/conflicts/{fake_conflict}/resolve"),
    ];
    let resolve_body = json!({"use": "server"});
    for (token, status, code) in [
        (None, 401, "unauthorized"),
        (Some("wrong"), 401, "unauthorized"),
        (Some(b.token.as_str()), 403, "forbidden"),
        (Some(a.token.as_str()), 403, "forbidden"),
    ] {
        for p in &gets {
            let (s, r) = app.get(p, token);
            assert_error((s, &r), status, code);
        }
        for p in &posts {
            let (s, r) = app.post(p, token, &resolve_body);
            assert_error((s, &r), status, code);
        }
        // Listing conflicts without naming one's own node id.
        let (s, r) = app.get("/api/sync/conflicts", token);
        assert_error((s, &r), status, code);
    }
    // None of that disabled a node or rotated a token.
    assert_eq!(app.node_status(&a)["active"], true);
    let mut a = a;
    let ex = a.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    // The admin gets what the nodes did not.
    for p in &gets {
        let (s, r) = app.get(p, Some(ADMIN));
        assert_eq!(s, 200, "{p}: {r}");
    }
    let (s, r) = app.post(&posts[3], Some(ADMIN), &resolve_body);
    assert_error((s, &r), 404, "not_found");
    // Admin bodies: not JSON is 400, malformed fields 422.
    let (s, r) = app.post_raw(&posts[3], Some(ADMIN), b"{not json");
    assert_error((s, &r), 400, "invalid_request");
    let (s, r) = app.post(&posts[3], Some(ADMIN), &json!({"use": 5}));
    assert_error((s, &r), 422, "invalid_request");
    for p in [
        format!("/api/sync/nodes/{}/disable", new_uuid()),
        format!("/api/sync/nodes/{}/enable", new_uuid()),
        format!("/api/sync/nodes/{}/token", new_uuid()),
    ] {
        let (s, r) = app.post(&p, Some(ADMIN), &json!({}));
        assert_error((s, &r), 404, "not_found");
    }
}

#[test]
fn node_lists_never_contain_tokens_or_hashes() {
    let (app, a, b) = setup();
    let secrets: Vec<String> = [&a.token, &b.token]
        .iter()
        .flat_map(|t| {
            use sha2::Digest;
            let h = sha2::Sha256::digest(t.as_bytes());
            [t.to_string(), hex::encode(h)]
        })
        .collect();
    let (s, list) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(s, 200, "{list}");
    let nodes = list["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let allowed = [
        "node_id",
        "code",
        "name",
        "description",
        "active",
        "created_at",
        "last_sync_in",
        "last_sync_out",
        "pending_changes",
    ];
    for n in nodes {
        let keys: Vec<&String> = n.as_object().unwrap().keys().collect();
        for k in &keys {
            assert!(allowed.contains(&k.as_str()), "unexpected field {k}: {n}");
        }
        for k in allowed {
            assert!(n.get(k).is_some(), "missing {k}: {n}");
        }
    }
    let (_, one) = app.post(
        &format!("/api/sync/nodes/{}/disable", a.id),
        Some(ADMIN),
        &json!({}),
    );
    let (_, two) = app.post(
        &format!("/api/sync/nodes/{}/enable", a.id),
        Some(ADMIN),
        &json!({}),
    );
    let (_, st) = app.get("/api/sync/status", Some(ADMIN));
    let (_, nst) = app.get(&format!("/api/sync/status/{}", b.id), Some(ADMIN));
    for body in [&list, &one, &two, &st, &nst] {
        let text = body.to_string();
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "a token or its hash leaked: {text}"
            );
        }
        assert!(!text.contains("token"), "{text}");
        assert!(!text.contains("hash"), "{text}");
    }
}

#[test]
fn disable_and_enable_answer_the_node_object() {
    let (app, _a, mut b) = setup();
    let (s, r) = app.post(
        &format!("/api/sync/nodes/{}/disable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["node_id"], json!(b.id));
    assert_eq!(r["code"], "B");
    assert_eq!(r["active"], false);
    let ex = b.sync(&app, vec![]);
    assert_ex_error(&ex, 401, "unauthorized");
    let (s, r) = app.post(
        &format!("/api/sync/nodes/{}/enable", b.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["active"], true);
    let ex = b.sync(&app, vec![]);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["duplicate"], false);
}

// ---------------------------------------------------------------------------------------------
// Routes and bodies
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_routes_answer_json_404() {
    let app = TestApp::spawn();
    for path in ["/", "/nope", "/api/sync/unknown", "/api/sync/nodes/x/y/z"] {
        let (s, r) = app.get(path, Some(ADMIN));
        assert_error((s, &r), 404, "not_found");
        let (s, r) = app.post(path, Some(ADMIN), &json!({}));
        assert_error((s, &r), 404, "not_found");
    }
}

#[test]
fn wrong_method_on_a_known_route_answers_json() {
    let app = TestApp::spawn();
    for (method, path) in [
        ("GET", "/api/sync/exchange"),
        ("GET", "/api/sync/register"),
        ("POST", "/health"),
        ("DELETE", "/api/sync/nodes"),
    ] {
        let resp = ureq::request(method, &app.url(path))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call();
        let (s, text) = match resp {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        };
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: error body is not JSON: {text:?}"));
        assert_error((s, &v), 405, "method_not_allowed");
    }
}

// ---------------------------------------------------------------------------------------------
// Per-change errors beside applied changes
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_changes_are_rejected_one_by_one_and_the_rest_applied() {
    let app = TestApp::spawn();
    let mut a = app.register("A");
    let mut b = app.register("B");
    let existing = new_uuid();
    let ex = a.sync(&app, vec![upsert("Doc", &existing, 0, json!({"v": 1}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);

    let good1 = new_uuid();
    let good2 = new_uuid();
    let good3 = new_uuid();
    let bad_type = upsert("9Bad-Type", &new_uuid(), 0, json!({}));
    let bad_uuid = upsert("Doc", "not/an-id", 0, json!({}));
    let upper_uuid = upsert("Doc", &new_uuid().to_uppercase(), 0, json!({}));
    let data_array = change("UPDATE", "Doc", &new_uuid(), 0, json!([1, 2]));
    let data_string = change("INSERT", "Doc", &new_uuid(), 0, json!("text"));
    let data_null = change("UPDATE", "Doc", &new_uuid(), 0, Value::Null);
    let bad_op = change("UPSERT", "Doc", &new_uuid(), 0, json!({}));
    let lower_op = change("update", "Doc", &new_uuid(), 0, json!({}));
    let ahead = change("UPDATE", "Doc", &existing, 5, json!({"v": "ahead"}));
    let ahead_unknown = change("UPDATE", "Doc", &new_uuid(), 3, json!({}));
    let bad_ts = {
        let mut c = upsert("Doc", &new_uuid(), 0, json!({}));
        c["updated_at"] = json!("yesterday");
        c
    };
    let bad: Vec<Value> = vec![
        bad_type,
        bad_uuid,
        upper_uuid,
        data_array,
        data_string,
        data_null,
        bad_op,
        lower_op,
        ahead,
        ahead_unknown,
        bad_ts,
    ];
    let mut changes = vec![upsert("Doc", &good1, 0, json!({"g": 1}))];
    changes.extend(bad[..5].iter().cloned());
    changes.push(upsert("Doc", &good2, 0, json!({"g": 2})));
    changes.extend(bad[5..].iter().cloned());
    changes.push(delete("Doc", &good3, 0)); // a no-op delete, counted as processed

    let ex = b.sync(&app, changes);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["success"], true);
    assert_eq!(ex.body["duplicate"], false);
    assert_eq!(ex.body["processed_count"], 3, "{}", ex.body);
    assert_eq!(ex.body["error_count"], bad.len() as u64, "{}", ex.body);
    assert_eq!(ex.body["conflict_count"], 0);
    let errors = ex.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), bad.len());
    for (e, c) in errors.iter().zip(&bad) {
        assert_eq!(e["error"], "invalid_change", "{e}");
        assert_eq!(
            e["change_id"], c["change_id"],
            "errors in packet order: {e}"
        );
        assert_eq!(e["entity_type"], c["entity_type"]);
        assert_eq!(e["entity_uuid"], c["entity_uuid"]);
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }

    // The valid ones are applied, the bad ones not.
    let (_, g1) = app.entity("Doc", &good1);
    assert_eq!(g1["version"], 1);
    assert_eq!(g1["data"], json!({"g": 1}));
    let (_, g2) = app.entity("Doc", &good2);
    assert_eq!(g2["data"], json!({"g": 2}));
    let (_, ex_ent) = app.entity("Doc", &existing);
    assert_eq!(ex_ent["version"], 1);
    assert_eq!(ex_ent["data"], json!({"v": 1}));
    for c in &bad[3..8] {
        assert!(!entity_exists(
            &app,
            "Doc",
            c["entity_uuid"].as_str().unwrap()
        ));
    }
    let (_, stats) = app.get("/api/sync/status", Some(ADMIN));
    assert_eq!(stats["entities"], 3, "{stats}");

    // A receives exactly the valid changes.
    let ex = a.sync(&app, vec![]);
    let got: Vec<String> = ex
        .changes()
        .iter()
        .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, vec![good1.clone(), good2.clone()]);
}

#[test]
fn odd_input_answers_json_errors_never_500() {
    // A long or non-UTF-8 id in the path, malformed query strings, an empty bearer.
    let app = TestApp::spawn();
    for p in [
        format!("/api/sync/status/{}", "x".repeat(5000)),
        "/api/sync/status/%FF%FE".to_string(),
    ] {
        let (s, r) = app.get(&p, Some(ADMIN));
        assert_error((s, &r), 404, "not_found");
    }
    for q in [
        "limit=abc",
        "limit=0",
        "limit=1&limit=2",
        "unresolved=maybe",
        "before=not-an-id",
    ] {
        let (s, r) = app.get(&format!("/api/sync/conflicts?{q}"), Some(ADMIN));
        assert_error((s, &r), 422, "invalid_request");
    }
    let resp = ureq::get(&app.url("/api/sync/nodes"))
        .set("Authorization", "Bearer")
        .call();
    match resp {
        Err(ureq::Error::Status(401, r)) => {
            let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert_error((401, &v), 401, "unauthorized");
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

/// PROTOCOL §6: every request body is a JSON object; an array in its place is malformed and
/// changes nothing (serde would otherwise read a struct from it).
#[test]
fn array_bodies_are_refused_and_change_nothing() {
    let app = TestApp::spawn();
    let (s, v) = app.post("/api/sync/register", Some(ADMIN), &json!(["ARRAY-CODE"]));
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("invalid_request")),
        "{v}"
    );
    let (_, nodes) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 0, "{nodes}");
    let mut a = app.register("A");
    let before = counters(&app, &a);
    let hex = a.packet(1, 0, vec![]);
    let (s, v) = app.post("/api/sync/exchange", Some(&a.token), &json!([encode(&hex)]));
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_packet")),
        "{v}"
    );
    assert_eq!(counters(&app, &a), before);
    // The packet itself is still number 1: nothing was used up.
    assert_eq!(a.sync(&app, vec![]).status, 200);
}

/// PROTOCOL §11: every other client protocol authenticates like packets — a disabled node's
/// token is refused (401) on each of them, and nothing it sent is applied.
#[test]
fn a_disabled_node_is_refused_by_every_client_protocol() {
    let app = TestApp::spawn();
    let n = app.register("GONE");
    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/disable", n.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let id = new_uuid();
    let writes = [
        (
            "/api/sync/delta",
            json!({"last_sync_at": null, "changes": [
                {"entity_type": "Task", "entity_id": id, "action": "create", "data": {"n": 1}}]}),
        ),
        (
            "/api/sync/push",
            json!({"changes": [{"id": "q-1", "entity_id": id, "entity_type": "Task",
                "action": "CREATE", "payload": {"n": 1}, "timestamp": 1_700_000_000_000_i64}]}),
        ),
        (
            "/api/sync/watermelon/push",
            json!({"changes": {"Task": {"created": [{"id": id, "n": 1}], "updated": [],
                "deleted": []}}, "last_pulled_at": 1}),
        ),
    ];
    for (path, body) in writes {
        let (s, answer) = app.post(path, Some(&n.token), &body);
        assert_eq!(s, 401, "{path}: {answer}");
        assert_eq!(answer["error"], "unauthorized", "{path}: {answer}");
    }
    let (s, answer) = app.put(
        &format!("/api/sync/entities/Task/{id}"),
        Some(&n.token),
        &json!({"data": {"n": 1}}),
    );
    assert_eq!(s, 401, "REST PUT: {answer}");
    for path in [
        "/api/sync/changes".to_string(),
        "/api/sync/watermelon/pull?last_pulled_at=null".to_string(),
        format!("/api/sync/entities/Task/{id}"),
    ] {
        let (s, answer) = app.get(&path, Some(&n.token));
        assert_eq!(s, 401, "{path}: {answer}");
    }
    // Nothing any of them sent exists.
    assert_eq!(app.entity("Task", &id).0, 404);
}

/// An exchange whose token authenticated before is checked again every time: after its node is
/// disabled, or its token rotated, the same token's next exchange is refused (401) and nothing
/// it carried is applied or numbered — however recently that token was accepted (the server
/// authenticates known tokens later in the exchange, never less).
#[test]
fn a_token_accepted_before_is_refused_once_disabled_or_rotated() {
    let app = TestApp::spawn();
    let mut a = app.register("WAS-OK");
    for _ in 0..3 {
        assert_eq!(a.sync(&app, vec![]).status, 200);
    }
    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/disable", a.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let before = counters(&app, &a);
    let id = new_uuid();
    let ex = a.sync(&app, vec![upsert("Task", &id, 0, json!({"n": 1}))]);
    assert_eq!(ex.status, 401, "{}", ex.body);
    assert_eq!(ex.body["error"], "unauthorized", "{}", ex.body);
    assert_eq!(counters(&app, &a), before);
    assert_eq!(app.entity("Task", &id).0, 404);

    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/enable", a.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(a.sync(&app, vec![]).status, 200);
    let (s, body) = app.post(
        &format!("/api/sync/nodes/{}/token", a.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200, "{body}");
    let new_token = body["auth_token"].as_str().unwrap().to_string();
    let before = counters(&app, &a);
    let ex = a.sync(&app, vec![upsert("Task", &id, 0, json!({"n": 2}))]);
    assert_eq!(ex.status, 401, "the old token: {}", ex.body);
    assert_eq!(counters(&app, &a), before);
    assert_eq!(app.entity("Task", &id).0, 404);
    a.token = new_token;
    assert_eq!(a.sync(&app, vec![]).status, 200, "the new token works");
}
