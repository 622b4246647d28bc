//! Delivery rules (PROTOCOL §3–4), black-box over HTTP: echo suppression, acknowledgment and
//! retry, cumulative server packets, duplicates, gaps, batching with `more`, initial sync,
//! one queue entry per entity, disabled nodes, restarts and concurrent exchanges.

mod ack_and_retry;
mod batching;
mod concurrency;
mod duplicates_and_gaps;
mod echo;
mod edge_cases;
mod initial_sync;
mod restart;
use crate::helpers::*;

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Barrier};

use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// The entity uuids of a list of server changes, in packet order.
fn uuids(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .map(|c| c["entity_uuid"].as_str().unwrap().to_string())
        .collect()
}

/// The server's version of an entity (None when the server does not have it).
fn server_version(app: &TestApp, t: &str, u: &str) -> Option<u64> {
    let (s, body) = app.entity(t, u);
    match s {
        200 => Some(body["version"].as_u64().unwrap()),
        404 => None,
        other => panic!("entity {t}/{u}: {other} {body}"),
    }
}

/// The delivery counters of a node's status (what a rejected request must leave alone).
fn counters(app: &TestApp, node: &TestNode) -> Value {
    let s = app.node_status(node);
    json!({
        "sent_packet_no": s["sent_packet_no"],
        "received_packet_no": s["received_packet_no"],
        "acked_packet_no": s["acked_packet_no"],
        "last_sync_in": s["last_sync_in"],
        "last_sync_out": s["last_sync_out"],
        "pending_changes": s["pending_changes"],
    })
}

fn pending(app: &TestApp, node: &TestNode) -> u64 {
    app.node_status(node)["pending_changes"].as_u64().unwrap()
}

/// Posts a packet from any thread (the harness's `TestApp` stays on the test thread).
fn post_exchange(url: &str, token: &str, packet: &Value) -> (u16, Value) {
    let body = json!({ "packet_data": encode(packet) }).to_string();
    let r = ureq::post(url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json")
        .send_string(&body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ok(ex: &Exchange) {
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["success"], true, "{}", ex.body);
}

/// Creates `n` entities of type `Item` on `node`, in one packet, and returns their uuids in
/// the order the server applies them.
fn create_items(app: &TestApp, node: &mut TestNode, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| new_uuid()).collect();
    let changes = ids
        .iter()
        .enumerate()
        .map(|(i, u)| upsert("Item", u, 0, json!({ "n": i })))
        .collect();
    let ex = node.sync(app, changes);
    ok(&ex);
    assert_eq!(ex.body["processed_count"], n as u64, "{}", ex.body);
    ids
}
