//! Hostile input (issue 8): a generated corpus of bad and odd input sent through every way in —
//! exchange envelopes, hex, gzip, packet and change fields, numbers, strings, NUL, surrogates,
//! nesting, timestamps, ids, query strings, path ids, admin writes, conflict resolutions — on
//! either backend (`STARSYNC_TEST_DATABASE_URL` selects PostgreSQL).
//!
//! The oracle: every answer is a JSON 4xx with a known `error` code, or a 200 whose changes are
//! applied or rejected one by one — never a 5xx; a rejected packet changes nothing (no entity,
//! no packet number used up); and every accepted value reads back byte for byte through the
//! admin API, another node's packets and the node library.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use starsync_node::{InitOptions, Node, NodeOptions};
use starsync_protocol::api::{ConflictList, EntityView};
use starsync_protocol::{codec, ErrorCode, MAX_DATA_DEPTH};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// HTTP with raw text answers (the helpers parse into `Value`, which would round numbers)
// ---------------------------------------------------------------------------------------------

fn http(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let mut req = ureq::request(method, &app.url(path));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let r = match body {
        Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: transport error {e}"),
    };
    let status = resp.status();
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    (status, text)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
}

/// The oracle for refusals: a 4xx with a JSON body `{error: <known code>, message}`.
#[track_caller]
fn json_4xx(case: &str, status: u16, text: &str) -> String {
    let body = parse(text);
    assert!(
        (400..500).contains(&status),
        "{case}: expected a 4xx, got {status}: {text:.300}"
    );
    let code = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: {status} without a JSON error body: {text:.300}"));
    assert_ne!(
        code.parse::<ErrorCode>().unwrap_or(ErrorCode::Unknown),
        ErrorCode::Unknown,
        "{case}: unknown error code {code}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: error without a message: {text:.300}"
    );
    code.to_string()
}

/// The entity's data as the admin API returns it, as text (None: 404).
fn admin_data(app: &TestApp, t: &str, u: &str) -> Option<String> {
    let (s, text) = http(
        app,
        "GET",
        &format!("/api/sync/entities/{t}/{u}"),
        Some(ADMIN),
        None,
    );
    match s {
        404 => None,
        200 => {
            let view: EntityView = serde_json::from_str(&text).unwrap();
            Some(view.data.map_or("null".into(), |d| d.into_string()))
        }
        _ => panic!("GET {t}/{u}: {s} {text:.300}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Packets written as text, so any number, escape or malformed field can be sent exactly
// ---------------------------------------------------------------------------------------------

/// A JSON object as (field, raw JSON text of the value) pairs.
type Fields = Vec<(&'static str, String)>;

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

fn object(fields: &Fields) -> String {
    let parts: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", parts.join(","))
}

/// Replaces a field's raw value (None: removes the field).
fn with(mut fields: Fields, name: &str, raw: Option<&str>) -> Fields {
    let pos = fields.iter().position(|(k, _)| *k == name);
    match (pos, raw) {
        (Some(i), Some(r)) => fields[i].1 = r.to_string(),
        (Some(i), None) => {
            fields.remove(i);
        }
        (None, _) => panic!("no field {name}"),
    }
    fields
}

fn change_fields(t: &str, u: &str, data: &str) -> Fields {
    vec![
        ("change_id", q(&new_uuid())),
        ("entity_type", q(t)),
        ("entity_uuid", q(u)),
        ("operation", q("INSERT")),
        ("base_version", "0".into()),
        ("version", "null".into()),
        ("updated_at", q(&now())),
        ("data", data.to_string()),
    ]
}

fn packet_fields(node: &TestNode, packet_no: u64, ack: u64, changes: &[String]) -> Fields {
    vec![
        ("format", "1".into()),
        ("schema_version", q("1.0.0")),
        ("sender_node_id", q(&node.id)),
        ("receiver_node_id", q(&node.server_id)),
        ("packet_no", packet_no.to_string()),
        ("ack_packet_no", ack.to_string()),
        ("created_at", q(&now())),
        ("more", "false".into()),
        ("changes", format!("[{}]", changes.join(","))),
    ]
}

fn envelope_of(packet_text: &str) -> Vec<u8> {
    let hex = hex::encode(codec::gzip_bytes(packet_text.as_bytes()));
    json!({ "packet_data": hex }).to_string().into_bytes()
}

fn exchange_bytes(app: &TestApp, node: &TestNode, body: &[u8]) -> (u16, String) {
    http(
        app,
        "POST",
        "/api/sync/exchange",
        Some(&node.token),
        Some(body),
    )
}

/// Sends one change in the node's next packet; the answer must be 200.
fn send_change(app: &TestApp, node: &mut TestNode, change: &Fields) -> Value {
    let text = object(&packet_fields(
        node,
        node.next_packet_no,
        0,
        &[object(change)],
    ));
    let (s, body) = exchange_bytes(app, node, &envelope_of(&text));
    assert_eq!(s, 200, "{body:.500}");
    node.next_packet_no += 1;
    parse(&body)
}

// ---------------------------------------------------------------------------------------------
// The corpus of `data` values: (name, JSON text, None = accepted | Some(reason))
// ---------------------------------------------------------------------------------------------

fn nested(levels: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
}

fn nested_arrays(levels: usize) -> String {
    format!(
        "{{\"a\":{}1{}}}",
        "[".repeat(levels - 1),
        "]".repeat(levels - 1)
    )
}

fn data_corpus() -> Vec<(String, String, Option<&'static str>)> {
    let mut v: Vec<(String, String, Option<&'static str>)> = Vec::new();
    let mut ok = |name: &str, text: String| v.push((name.into(), text, None));
    for n in [
        "18446744073709551616",
        "1E5",
        "-0",
        "1.0",
        "12345678901234567890123",
        "1e-400",
        "1.7976931348623157e308",
        "-9223372036854775809",
        "0.1",
        "1e+2",
        "1E-2",
        "-0.0",
        "123456789012345678901234567890.123456789",
        "9007199254740993",
        "5e-324",
        "0",
    ] {
        ok(&format!("number {n}"), format!("{{\"n\":{n}}}"));
    }
    ok("NUL inside a string", r#"{"s":"a\u0000b"}"#.into());
    ok("NUL as a key", r#"{"\u0000":"k"}"#.into());
    ok("surrogate pair", r#"{"s":"\ud83d\ude00"}"#.into());
    ok("raw emoji", r#"{"s":"😀 ü"}"#.into());
    ok("every escape", r#"{"s":"\u00e9\/\\\"\b\f\n\r\t"}"#.into());
    ok("empty object", "{}".into());
    ok(
        "inner whitespace",
        "{ \"a\" : [ 1 , 2 ] ,\n\t\"b\" : { } }".into(),
    );
    ok("nesting at the limit", nested(MAX_DATA_DEPTH));
    ok("arrays at the limit", nested_arrays(MAX_DATA_DEPTH));
    ok(
        "a 100 KB string",
        format!("{{\"s\":\"{}\"}}", "x".repeat(100 * 1024)),
    );
    ok(
        "mixed values",
        r#"{"a":null,"b":true,"c":[1,"x",{"d":[]}],"e":-1.5e-3}"#.into(),
    );
    ok("key order kept", r#"{"z":1,"a":2,"m":3}"#.into());
    let mut bad =
        |name: &str, text: String, reason: &'static str| v.push((name.into(), text, Some(reason)));
    for (name, text) in [
        ("null", "null"),
        ("array", "[1,2]"),
        ("string", "\"x\""),
        ("number", "1"),
        ("boolean", "true"),
    ] {
        bad(&format!("data {name}"), text.into(), "data_not_object");
    }
    for n in ["1e400", "-1e400", "1E309", "2e308", "1e999999"] {
        bad(
            &format!("number {n}"),
            format!("{{\"n\":{n}}}"),
            "invalid_data",
        );
    }
    for (name, text) in [
        ("lone high surrogate", r#"{"s":"\ud800"}"#),
        ("lone low surrogate", r#"{"s":"\udfff"}"#),
        ("lone surrogate in a key", r#"{"\ud800":1}"#),
        ("surrogate then letter", r#"{"s":"\ud800\u0041"}"#),
        ("reversed pair", r#"{"s":"\ude00\ud83d"}"#),
        ("duplicate key", r#"{"a":1,"a":2}"#),
        ("duplicate nested key", r#"{"o":{"k":1,"k":1}}"#),
    ] {
        bad(name, text.into(), "invalid_data");
    }
    for levels in [MAX_DATA_DEPTH + 1, 128, 129, 1000] {
        bad(&format!("nesting {levels}"), nested(levels), "invalid_data");
    }
    bad("arrays nested 200", nested_arrays(200), "invalid_data");
    v
}

// ---------------------------------------------------------------------------------------------
// The corpus test
// ---------------------------------------------------------------------------------------------

/// What the corpus accepted, to read back: (type, uuid) → the data text sent.
type Accepted = BTreeMap<(String, String), String>;

#[test]
fn hostile_corpus() {
    let app = TestApp::spawn_with("[conflicts]\ndefault = \"manual\"\n", &[]);
    let mut cases = 0usize;
    let mut accepted = Accepted::new();
    cases += envelope_cases(&app);
    cases += packet_field_cases(&app);
    cases += change_cases(&app, &mut accepted);
    cases += admin_write_cases(&app, &mut accepted);
    cases += url_cases(&app);
    cases += register_cases(&app);
    cases += resolve_cases(&app, &mut accepted);
    assert!(cases >= 200, "only {cases} cases");
    read_back_everywhere(&app, &accepted);
    eprintln!(
        "hostile corpus: {cases} cases, {} accepted values read back",
        accepted.len()
    );
}

/// Bodies of `/api/sync/exchange` that are not a usable envelope, hex or gzip: 4xx, and the node
/// can still send its packet 1 afterwards.
fn envelope_cases(app: &TestApp) -> usize {
    let mut node = app.register("ENV");
    let u = new_uuid();
    let good = object(&packet_fields(
        &node,
        1,
        0,
        &[object(&change_fields("Env", &u, r#"{"v":1}"#))],
    ));
    let gz = codec::gzip_bytes(good.as_bytes());
    let hexed = |b: &[u8]| {
        json!({ "packet_data": hex::encode(b) })
            .to_string()
            .into_bytes()
    };
    let mut truncated = gz.clone();
    truncated.truncate(gz.len() - 8);
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0xff;
    let mut trailing = gz.clone();
    trailing.extend_from_slice(b"garbage");
    let mut zlib = Vec::new();
    {
        let mut e = flate_zlib(&mut zlib);
        e.write_all(good.as_bytes()).unwrap();
    }
    let bomb = codec::gzip_bytes(&vec![b' '; 65 * 1024 * 1024]);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", vec![]),
        ("null", b"null".to_vec()),
        ("array", b"[]".to_vec()),
        ("empty object", b"{}".to_vec()),
        ("string", b"\"x\"".to_vec()),
        ("number", b"123".to_vec()),
        ("not JSON", b"{".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
        ("NUL bytes", vec![0; 16]),
        ("deeply nested envelope", deep.into_bytes()),
        ("packet_data number", br#"{"packet_data":1}"#.to_vec()),
        ("packet_data null", br#"{"packet_data":null}"#.to_vec()),
        ("packet_data empty", br#"{"packet_data":""}"#.to_vec()),
        ("packet_data not hex", br#"{"packet_data":"zz"}"#.to_vec()),
        (
            "packet_data odd length",
            br#"{"packet_data":"abc"}"#.to_vec(),
        ),
        (
            "packet_data with NUL",
            br#"{"packet_data":"1f\u00008b"}"#.to_vec(),
        ),
        (
            "packet_data lone surrogate",
            br#"{"packet_data":"\ud800"}"#.to_vec(),
        ),
        (
            "hex with an inner space",
            json!({"packet_data": format!("{} {}", hex::encode(&gz[..4]), hex::encode(&gz[4..]))})
                .to_string()
                .into_bytes(),
        ),
        ("hex of text", hexed(b"hello")),
        ("gzip magic only", hexed(&[0x1f, 0x8b])),
        ("truncated gzip", hexed(&truncated)),
        ("gzip with a bad CRC", hexed(&bad_crc)),
        ("gzip with trailing garbage", hexed(&trailing)),
        ("zlib instead of gzip", hexed(&zlib)),
        ("raw packet JSON", hexed(good.as_bytes())),
        ("gzip of nothing", hexed(&codec::gzip_bytes(b""))),
        (
            "gzip of not JSON",
            hexed(&codec::gzip_bytes(b"{\"format\":")),
        ),
        ("gzip of an array", hexed(&codec::gzip_bytes(b"[]"))),
        ("gzip of null", hexed(&codec::gzip_bytes(b"null"))),
        ("gzip of NUL bytes", hexed(&codec::gzip_bytes(&[0; 64]))),
        ("gzip bomb", hexed(&bomb)),
        (
            "duplicate envelope key",
            format!(
                "{{\"packet_data\":\"{}\",\"packet_data\":\"00\"}}",
                hex::encode(&gz)
            )
            .into_bytes(),
        ),
    ];
    let n = bodies.len();
    for (name, body) in bodies {
        let (s, text) = exchange_bytes(app, &node, &body);
        json_4xx(&format!("envelope: {name}"), s, &text);
        assert_eq!(
            app.node_status(&node)["received_packet_no"],
            0,
            "envelope: {name} changed the node's counters"
        );
    }
    assert_eq!(
        admin_data(app, "Env", &u),
        None,
        "a rejected envelope applied its change"
    );
    // Nothing was used up: packet 1 is still the one the server expects.
    let (s, text) = exchange_bytes(app, &node, &envelope_of(&good));
    assert_eq!(s, 200, "{text:.300}");
    node.next_packet_no = 2;
    assert_eq!(admin_data(app, "Env", &u).as_deref(), Some(r#"{"v":1}"#));
    n + 1
}

fn flate_zlib(out: &mut Vec<u8>) -> flate2::write::ZlibEncoder<&mut Vec<u8>> {
    flate2::write::ZlibEncoder::new(out, flate2::Compression::default())
}

/// Every packet header field, missing or given a hostile value. Expected: 400 (missing or
/// wrong type), 403 (addressed to someone else), 409 (schema), or accepted where the value is
/// legal (`more`, `ack_packet_no: 0`, any `created_at` string, `changes: []`).
fn packet_field_cases(app: &TestApp) -> usize {
    let mut node = app.register("PKT");
    let values: [(&str, Option<&str>); 13] = [
        ("missing", None),
        ("null", Some("null")),
        ("string", Some("\"x\"")),
        ("NUL string", Some("\"\\u0000\"")),
        ("lone surrogate", Some("\"\\ud800\"")),
        ("fraction", Some("1.5")),
        ("negative", Some("-1")),
        ("zero", Some("0")),
        ("1e400", Some("1e400")),
        ("2^53", Some("9007199254740992")),
        ("object", Some("{}")),
        ("array", Some("[]")),
        ("true", Some("true")),
    ];
    let fields = [
        "format",
        "schema_version",
        "sender_node_id",
        "receiver_node_id",
        "packet_no",
        "ack_packet_no",
        "created_at",
        "more",
        "changes",
    ];
    let mut n = 0;
    for field in fields {
        for (vname, raw) in values {
            let is_string = matches!(vname, "string" | "NUL string");
            let expect: Option<u16> = match (field, vname) {
                ("more", "missing" | "true") => None,
                ("ack_packet_no", "zero") => None,
                ("created_at", _) if is_string => None,
                ("changes", "array") => None,
                ("schema_version", _) if is_string => Some(409),
                ("sender_node_id" | "receiver_node_id", _) if is_string => Some(403),
                _ => Some(400),
            };
            let u = new_uuid();
            let change = object(&change_fields("Pkt", &u, r#"{"v":1}"#));
            let fields = packet_fields(&node, node.next_packet_no, 0, &[change]);
            let text = object(&with(fields, field, raw));
            let (s, body) = exchange_bytes(app, &node, &envelope_of(&text));
            let case = format!("packet field {field} = {vname}");
            n += 1;
            match expect {
                None => {
                    assert_eq!(s, 200, "{case}: {body:.300}");
                    node.next_packet_no += 1;
                }
                Some(status) => {
                    json_4xx(&case, s, &body);
                    assert_eq!(s, status, "{case}: {body:.300}");
                    assert_eq!(admin_data(app, "Pkt", &u), None, "{case} applied a change");
                    assert_eq!(
                        app.node_status(&node)["received_packet_no"],
                        node.next_packet_no - 1,
                        "{case} used up a packet number"
                    );
                }
            }
        }
    }
    // Change elements that are not well-formed changes reject the whole packet.
    let u = new_uuid();
    let good = change_fields("Pkt", &u, r#"{"v":1}"#);
    let mut shapes: Vec<(String, String)> = ["1", "null", "\"x\"", "[]", "true"]
        .iter()
        .map(|s| (format!("change element {s}"), s.to_string()))
        .collect();
    for (field, _) in &good {
        shapes.push((
            format!("change without {field}"),
            object(&with(good.clone(), field, None)),
        ));
    }
    for (field, raw) in [
        ("change_id", "1"),
        ("change_id", "null"),
        ("entity_type", "null"),
        ("entity_type", "[]"),
        ("entity_uuid", "7"),
        ("operation", "null"),
        ("operation", "1"),
        ("base_version", "\"0\""),
        ("base_version", "-1"),
        ("base_version", "1.5"),
        ("base_version", "9007199254740992"),
        ("base_version", "1e400"),
        ("version", "\"x\""),
        ("version", "-1"),
        ("updated_at", "null"),
        ("updated_at", "1"),
        ("updated_at", "\"\\udc00\""),
        ("change_id", "\"\\ud800\""),
    ] {
        shapes.push((
            format!("change {field} = {raw}"),
            object(&with(good.clone(), field, Some(raw))),
        ));
    }
    for (case, change) in shapes {
        let text = object(&packet_fields(&node, node.next_packet_no, 0, &[change]));
        let (s, body) = exchange_bytes(app, &node, &envelope_of(&text));
        assert_eq!(json_4xx(&case, s, &body), "invalid_packet", "{case}");
        assert_eq!(s, 400, "{case}");
        n += 1;
    }
    assert_eq!(admin_data(app, "Pkt", &u), None);
    // A packet ahead of the expected number is a gap; one acknowledging the future is invalid.
    let text = object(&packet_fields(&node, node.next_packet_no + 3, 0, &[]));
    let (s, body) = exchange_bytes(app, &node, &envelope_of(&text));
    assert_eq!((s, json_4xx("gap", s, &body).as_str()), (409, "packet_gap"));
    let text = object(&packet_fields(&node, node.next_packet_no, 999, &[]));
    let (s, body) = exchange_bytes(app, &node, &envelope_of(&text));
    assert_eq!(
        (s, json_4xx("ack", s, &body).as_str()),
        (422, "invalid_ack")
    );
    n + 2
}

/// One change per packet: ids, operations, timestamps and every `data` of the corpus.
fn change_cases(app: &TestApp, accepted: &mut Accepted) -> usize {
    let mut node = app.register("CHG");
    let t = "Hostile";
    let mut cases: Vec<(String, Fields, Option<&'static str>)> = Vec::new();
    let base = |data: &str| change_fields(t, &new_uuid(), data);
    let obj = r#"{"v":1}"#;
    for (name, text, expect) in data_corpus() {
        cases.push((format!("data: {name}"), base(&text), expect));
    }
    for (raw, expect) in [
        ("\"\"", Some("invalid_entity_type")),
        ("\"1abc\"", Some("invalid_entity_type")),
        ("\"a-b\"", Some("invalid_entity_type")),
        ("\"a b\"", Some("invalid_entity_type")),
        ("\"a\\u0000b\"", Some("invalid_entity_type")),
        ("\"\\u0000\"", Some("invalid_entity_type")),
        ("\"Éntity\"", Some("invalid_entity_type")),
        ("\"a\\nb\"", Some("invalid_entity_type")),
        (&*q(&"a".repeat(65)), Some("invalid_entity_type")),
        (&*q(&"a".repeat(64)), None),
        ("\"a_1\"", None),
    ] {
        cases.push((
            format!("entity_type {raw:.40}"),
            with(base(obj), "entity_type", Some(raw)),
            expect,
        ));
    }
    let upper = new_uuid().to_uppercase();
    let with_nul = format!("{}\\u0000", new_uuid());
    for (raw, expect) in [
        (q(""), Some("invalid_entity_uuid")),
        (q(&upper), Some("invalid_entity_uuid")),
        (q("\u{0}"), Some("invalid_entity_uuid")),
        (format!("\"{with_nul}\""), Some("invalid_entity_uuid")),
        (q("-task-1"), Some("invalid_entity_uuid")),
        (q("a/b"), Some("invalid_entity_uuid")),
        (q("a b"), Some("invalid_entity_uuid")),
        (q(&"i".repeat(129)), Some("invalid_entity_uuid")),
        (
            q(&format!("{{{}}}", new_uuid())),
            Some("invalid_entity_uuid"),
        ),
        // Ids are not only UUIDs (PROTOCOL 1.1 §1).
        (q("task-1"), None),
        (q("ns:thing.1"), None),
        (q(&"i".repeat(128)), None),
        (q(&format!("{}0", new_uuid())), None),
    ] {
        cases.push((
            format!("entity_uuid {raw:.50}"),
            with(base(obj), "entity_uuid", Some(&raw)),
            expect,
        ));
    }
    for (raw, expect) in [
        (q(""), Some("invalid_change_id")),
        (q("\u{0}"), Some("invalid_change_id")),
        (q("a\u{0}"), Some("invalid_change_id")),
        (q(&"c".repeat(129)), Some("invalid_change_id")),
        (q(&"c".repeat(128)), None),
        (q("ü😀"), None),
        (q(" "), None),
    ] {
        cases.push((
            format!("change_id {raw:.40}"),
            with(base(obj), "change_id", Some(&raw)),
            expect,
        ));
    }
    for raw in ["insert", "", "UPSERT", "INSERT\u{0}", "DELETE ", "Insert"] {
        cases.push((
            format!("operation {raw:?}"),
            with(base(obj), "operation", Some(&q(raw))),
            Some("unknown_operation"),
        ));
    }
    let ts = |d: chrono::Duration| starsync_protocol::format_ts(chrono::Utc::now() + d);
    for (raw, expect) in [
        (q(""), Some("invalid_updated_at")),
        (q("   "), Some("invalid_updated_at")),
        (q("now"), Some("invalid_updated_at")),
        (q("2026-13-01T00:00:00Z"), Some("invalid_updated_at")),
        (q("2026-11-22T10:00:00"), Some("invalid_updated_at")),
        (q("\u{0}"), Some("invalid_updated_at")),
        (q("9999-12-31T23:59:59Z"), Some("invalid_updated_at")),
        (
            q(&ts(chrono::Duration::hours(1))),
            Some("invalid_updated_at"),
        ),
        (
            q(&ts(chrono::Duration::minutes(11))),
            Some("invalid_updated_at"),
        ),
        (q(&ts(chrono::Duration::minutes(5))), None),
        (q("1970-01-01T00:00:00Z"), None),
        (q("2000-01-01T00:00:00+14:00"), None),
        (q("2020-02-29T23:59:59.123456789Z"), None),
    ] {
        cases.push((
            format!("updated_at {raw}"),
            with(base(obj), "updated_at", Some(&raw)),
            expect,
        ));
    }
    // An UPDATE based on a version the server never had.
    cases.push((
        "update ahead".into(),
        with(
            with(base(obj), "operation", Some("\"UPDATE\"")),
            "base_version",
            Some("5"),
        ),
        Some("version_ahead"),
    ));
    // DELETE ignores its data, even data that would be invalid.
    cases.push((
        "delete with invalid data".into(),
        with(base(r#"{"n":1e400}"#), "operation", Some("\"DELETE\"")),
        None,
    ));
    let n = cases.len();
    for (case, change, expect) in cases {
        let body = send_change(app, &mut node, &change);
        let field = |k: &str| {
            change
                .iter()
                .find(|(f, _)| *f == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let key: Option<(String, String)> = match (
            serde_json::from_str::<String>(&field("entity_type")),
            serde_json::from_str::<String>(&field("entity_uuid")),
        ) {
            (Ok(t), Ok(u))
                if starsync_protocol::EntityType::parse(&t).is_ok()
                    && starsync_protocol::EntityId::parse(&u).is_ok() =>
            {
                Some((t, u))
            }
            _ => None,
        };
        match expect {
            None => {
                assert_eq!(body["error_count"], 0, "{case}: {body:.500}");
                assert_eq!(body["processed_count"], 1, "{case}");
                let (t, u) = key.expect("accepted changes have valid ids");
                if field("operation") != "\"DELETE\"" {
                    accepted.insert((t, u), field("data"));
                }
            }
            Some(reason) => {
                assert_eq!(body["processed_count"], 0, "{case}: {body:.500}");
                assert_eq!(body["errors"][0]["error"], "invalid_change", "{case}");
                assert_eq!(body["errors"][0]["reason"], reason, "{case}: {body:.500}");
                if let Some((t, u)) = key {
                    assert_eq!(admin_data(app, &t, &u), None, "{case}: rejected but stored");
                }
            }
        }
    }
    // Valid and invalid changes mixed in one packet: the valid ones are applied.
    let (u1, u2) = (new_uuid(), new_uuid());
    let changes = [
        object(&change_fields(t, &u1, r#"{"m":1E5}"#)),
        object(&with(
            change_fields(t, &u2, r#"{"m":1}"#),
            "change_id",
            Some("\"\\u0000\""),
        )),
        object(&change_fields(t, &new_uuid(), r#"{"m":1e400}"#)),
    ];
    let text = object(&packet_fields(&node, node.next_packet_no, 0, &changes));
    let (s, body) = exchange_bytes(app, &node, &envelope_of(&text));
    assert_eq!(s, 200, "{body:.300}");
    let body = parse(&body);
    assert_eq!(
        (body["processed_count"].clone(), body["error_count"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(admin_data(app, t, &u2), None);
    accepted.insert((t.into(), u1), r#"{"m":1E5}"#.into());
    n + 1
}

/// Admin `PUT` of every `data` of the corpus: the same verdict as in a packet (200 or 422).
fn admin_write_cases(app: &TestApp, accepted: &mut Accepted) -> usize {
    let t = "AdminHostile";
    let mut n = 0;
    for (name, text, expect) in data_corpus() {
        let u = new_uuid();
        let body = format!("{{\"data\":{text}}}");
        let (s, answer) = http(
            app,
            "PUT",
            &format!("/api/sync/entities/{t}/{u}"),
            Some(ADMIN),
            Some(body.as_bytes()),
        );
        let case = format!("admin PUT {name}");
        match expect {
            None => {
                assert_eq!(s, 200, "{case}: {answer:.300}");
                let view: EntityView = serde_json::from_str(&answer).unwrap();
                assert_eq!(view.data.unwrap().as_str(), text, "{case}: answer");
                accepted.insert((t.into(), u), text);
            }
            Some(_) => {
                assert_eq!(json_4xx(&case, s, &answer), "invalid_request", "{case}");
                assert_eq!(s, 422, "{case}");
                assert_eq!(admin_data(app, t, &u), None, "{case}: rejected but stored");
            }
        }
        n += 1;
    }
    let u = new_uuid();
    for (name, body, status) in [
        ("not JSON", "{", 400),
        ("no data", "{}", 422),
        ("data null", r#"{"data":null}"#, 422),
        ("array body", "[]", 422),
        ("lone surrogate key", r#"{"\ud800":1}"#, 400),
    ] {
        let (s, answer) = http(
            app,
            "PUT",
            &format!("/api/sync/entities/{t}/{u}"),
            Some(ADMIN),
            Some(body.as_bytes()),
        );
        let case = format!("admin PUT body {name}");
        json_4xx(&case, s, &answer);
        assert_eq!(s, status, "{case}: {answer}");
        n += 1;
    }
    assert_eq!(admin_data(app, t, &u), None);
    n
}

/// Query strings and path ids: NUL, invalid UTF-8, bad numbers, repeats, very long values.
fn url_cases(app: &TestApp) -> usize {
    let node = app.register("URL");
    let u = new_uuid();
    let long = "x".repeat(60_000);
    let mut gets: Vec<(String, Option<u16>)> = Vec::new();
    for p in [
        "entity_type",
        "entity_uuid",
        "node_id",
        "before",
        "limit",
        "unresolved",
        "other",
    ] {
        gets.push((format!("/api/sync/conflicts?{p}=%00"), Some(422)));
        gets.push((format!("/api/sync/conflicts?{p}=a%00b"), Some(422)));
    }
    for (query, status) in [
        ("%00=1", Some(422)),
        ("limit=0", Some(422)),
        ("limit=1001", Some(422)),
        ("limit=-1", Some(422)),
        ("limit=abc", Some(422)),
        ("limit=1e3", Some(422)),
        ("limit=99999999999999999999999", Some(422)),
        ("unresolved=maybe", Some(422)),
        ("before=unknown", Some(422)),
        ("limit=1&limit=2", Some(422)),
        // Query strings decode invalid UTF-8 as U+FFFD: a value no entity has.
        ("entity_type=%FF", None),
        ("entity_type=%C0%80", None),
        ("limit=1000", None),
        ("entity_type=%E2%82%AC&unresolved=1", None),
    ] {
        gets.push((format!("/api/sync/conflicts?{query}"), status));
    }
    gets.push((format!("/api/sync/conflicts?entity_type={long}"), None));
    for path in [
        "/api/sync/status/%00".to_string(),
        format!("/api/sync/status/{}%00", node.id),
        format!("/api/sync/entities/T/{u}%00"),
        "/api/sync/entities/%00/x".into(),
        "/api/sync/entities/T/%00".into(),
        "/%00".into(),
    ] {
        gets.push((path, Some(422)));
    }
    for (path, status) in [
        (format!("/api/sync/entities/T/{}", u.to_uppercase()), 422),
        ("/api/sync/entities/T/-not-an-id".to_string(), 422),
        ("/api/sync/entities/T/not-a-uuid".to_string(), 404),
        (format!("/api/sync/entities/1T/{u}"), 422),
        (format!("/api/sync/entities/T/{u}"), 404),
        (format!("/api/sync/status/{long}"), 404),
        ("/api/sync/status/%FF".into(), 404),
        // Path segments decode invalid UTF-8 as U+FFFD, which no type name allows.
        (format!("/api/sync/entities/%FF/{u}"), 422),
    ] {
        gets.push((path, Some(status)));
    }
    let mut n = 0;
    for (path, status) in gets {
        let (s, text) = http(app, "GET", &path, Some(ADMIN), None);
        let case = format!("GET {path:.80}");
        match status {
            None => assert_eq!(s, 200, "{case}: {text:.300}"),
            Some(status) => {
                json_4xx(&case, s, &text);
                assert_eq!(s, status, "{case}: {text:.300}");
            }
        }
        n += 1;
    }
    for path in [
        "/api/sync/nodes/%00/disable".to_string(),
        "/api/sync/nodes/%00/enable".into(),
        "/api/sync/nodes/%00/token".into(),
        format!("/api/sync/nodes/{}%00/token", node.id),
        "/api/sync/conflicts/%00/resolve".into(),
        "/api/sync/register?x=%00".into(),
        "/api/sync/exchange?%00".into(),
    ] {
        let (s, text) = http(app, "POST", &path, Some(ADMIN), Some(b"{}"));
        json_4xx(&format!("POST {path}"), s, &text);
        assert_eq!(s, 422, "POST {path}: {text}");
        n += 1;
    }
    for path in [
        "/api/sync/nodes/%FF/disable",
        "/api/sync/nodes/x/disable",
        "/api/sync/conflicts/%FF/resolve",
    ] {
        let (s, text) = http(
            app,
            "POST",
            path,
            Some(ADMIN),
            Some(b"{\"use\":\"server\"}"),
        );
        assert_eq!(
            json_4xx(&format!("POST {path}"), s, &text),
            "not_found",
            "{path}"
        );
        n += 1;
    }
    // The node's token did not change through any of this.
    assert_eq!(app.node_status(&node)["active"], true);
    n
}

/// Registration bodies with NUL, surrogates and oversized fields.
fn register_cases(app: &TestApp) -> usize {
    let mut n = 0;
    for (name, body, status) in [
        ("NUL in the code", r#"{"code":"A\u0000"}"#.to_string(), 422),
        ("NUL code", r#"{"code":"\u0000"}"#.into(), 422),
        (
            "NUL in the name",
            r#"{"code":"REGN1","name":"a\u0000b"}"#.into(),
            422,
        ),
        (
            "NUL name",
            r#"{"code":"REGN2","name":"\u0000"}"#.into(),
            422,
        ),
        (
            "NUL in the description",
            r#"{"code":"REGN3","description":"d\u0000"}"#.into(),
            422,
        ),
        (
            "lone surrogate in the name",
            r#"{"code":"REGN4","name":"\ud800"}"#.into(),
            400,
        ),
        (
            "name too long",
            format!(r#"{{"code":"REGN5","name":"{}"}}"#, "n".repeat(201)),
            422,
        ),
        ("code with a space", r#"{"code":"A B"}"#.into(), 422),
        ("code as a number", r#"{"code":7}"#.into(), 422),
    ] {
        let (s, text) = http(
            app,
            "POST",
            "/api/sync/register",
            Some(ADMIN),
            Some(body.as_bytes()),
        );
        json_4xx(&format!("register: {name}"), s, &text);
        assert_eq!(s, status, "register: {name}: {text}");
        n += 1;
    }
    let (s, text) = http(app, "GET", "/api/sync/nodes", Some(ADMIN), None);
    assert_eq!(s, 200);
    assert!(
        !text.contains("REGN"),
        "a refused registration created a node: {text:.500}"
    );
    n
}

/// Resolving a manual conflict with hostile data: refused (422) and the row stays unresolved;
/// then resolved with exact numbers.
fn resolve_cases(app: &TestApp, accepted: &mut Accepted) -> usize {
    let t = "Manual";
    let u = new_uuid();
    let mut a = app.register("RSA");
    let mut b = app.register("RSB");
    ok_sync(app, &mut a, vec![upsert(t, &u, 0, json!({"v": "a"}))]);
    b.drain(app);
    ok_sync(app, &mut a, vec![upsert(t, &u, 1, json!({"v": "a2"}))]);
    let ex = b.sync(app, vec![upsert(t, &u, 1, json!({"v": "b"}))]);
    let id = ex.body["conflicts"][0]["conflict_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/sync/conflicts/{id}/resolve");
    let mut n = 0;
    for (name, text, expect) in data_corpus() {
        if expect.is_none() {
            continue;
        }
        let body = format!("{{\"data\":{text}}}");
        let (s, answer) = http(app, "POST", &path, Some(ADMIN), Some(body.as_bytes()));
        let case = format!("resolve with {name}");
        assert_eq!(json_4xx(&case, s, &answer), "invalid_request", "{case}");
        assert_eq!(s, 422, "{case}");
        n += 1;
    }
    for (name, body, status) in [
        ("data and use", r#"{"data":{},"use":"server"}"#, 422),
        ("neither", "{}", 422),
        ("use NUL", r#"{"use":"\u0000"}"#, 422),
        ("not JSON", "{", 400),
    ] {
        let (s, answer) = http(app, "POST", &path, Some(ADMIN), Some(body.as_bytes()));
        json_4xx(&format!("resolve {name}"), s, &answer);
        assert_eq!(s, status, "resolve {name}: {answer}");
        n += 1;
    }
    let rows = app.conflicts("?unresolved=true");
    assert_eq!(rows.len(), 1, "a refused resolution resolved the row");
    let exact = r#"{"n":18446744073709551616,"e":1E5,"z":-0}"#;
    let (s, answer) = http(
        app,
        "POST",
        &path,
        Some(ADMIN),
        Some(format!("{{\"data\":{exact}}}").as_bytes()),
    );
    assert_eq!(s, 200, "{answer}");
    let view: EntityView = serde_json::from_str(&answer).unwrap();
    assert_eq!(view.data.unwrap().as_str(), exact);
    accepted.insert((t.into(), u), exact.into());
    n + 1
}

#[track_caller]
fn ok_sync(app: &TestApp, node: &mut TestNode, changes: Vec<Value>) {
    let ex = node.sync(app, changes);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(ex.body["error_count"], 0, "{}", ex.body);
}

/// Every accepted value, byte for byte: the admin API, a new node's packets (raw protocol) and
/// the node library.
fn read_back_everywhere(app: &TestApp, accepted: &Accepted) {
    for ((t, u), text) in accepted {
        assert_eq!(
            admin_data(app, t, u).as_deref(),
            Some(text.as_str()),
            "admin GET {t}/{u}"
        );
    }
    let received = drain_raw(app, "READER");
    for ((t, u), text) in accepted {
        assert_eq!(
            received.get(&(t.clone(), u.clone())),
            Some(text),
            "a node's packet for {t}/{u}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let node = lib_node(dir.path(), &app.base, "LIBREADER");
    let report = node.sync().unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    for ((t, u), text) in accepted {
        let e = node
            .get(t, u)
            .unwrap()
            .unwrap_or_else(|| panic!("the node library has no {t}/{u}"));
        assert_eq!(e.data.as_str(), text, "Node::get {t}/{u}");
    }
}

/// A new raw node exchanges until the server has nothing more; returns the data text of every
/// live entity it received.
fn drain_raw(app: &TestApp, code: &str) -> Accepted {
    let mut node = app.register(code);
    let mut out = Accepted::new();
    let mut ack = 0;
    loop {
        let text = object(&packet_fields(&node, node.next_packet_no, ack, &[]));
        let (s, body) = exchange_bytes(app, &node, &envelope_of(&text));
        assert_eq!(s, 200, "{body:.300}");
        node.next_packet_no += 1;
        let hex = parse(&body)["packet_data"].as_str().unwrap().to_string();
        let packet = codec::decode_hex_packet(&hex, 1 << 30).unwrap();
        ack = packet.packet_no;
        for c in &packet.changes {
            let key = (c.entity_type.clone(), c.entity_uuid.clone());
            if c.operation == "DELETE" {
                out.remove(&key);
            } else {
                out.insert(key, c.data_text().to_string());
            }
        }
        if !packet.more {
            return out;
        }
    }
}

fn lib_node(dir: &Path, base: &str, code: &str) -> Node {
    Node::init_with(
        dir,
        InitOptions::register(base, code).admin_token(ADMIN),
        None,
        NodeOptions {
            retry_base_delay: Duration::from_millis(5),
            retry_max_delay: Duration::from_millis(20),
        },
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// One test per finding
// ---------------------------------------------------------------------------------------------

/// Numbers that a `serde_json::Value` would change (2^64 → 1.8446744073709552e+19, 1E5 →
/// 100000.0) come back byte for byte from the admin API, the conflict listing (server and node
/// library), another node's packet and `Node::get`.
#[test]
fn numbers_read_back_exactly_as_written() {
    let app = TestApp::spawn();
    let t = "Exact";
    let u = new_uuid();
    let x = r#"{"big":18446744073709551616,"e":1E5,"z":-0,"f":1.0,"huge":12345678901234567890123}"#;
    let y =
        r#"{"big":18446744073709551617,"e":2E5,"z":-0.0,"f":2.50,"huge":-12345678901234567890123}"#;
    let z = r#"{"big":18446744073709551618,"e":3E-5,"f":1.0e0}"#;
    let mut a = app.register("A");
    let mut b = app.register("B");
    let body = send_change(&app, &mut a, &change_fields(t, &u, x));
    assert_eq!(body["processed_count"], 1, "{body}");
    assert_eq!(admin_data(&app, t, &u).as_deref(), Some(x), "admin GET");
    assert_eq!(
        drain_raw(&app, "C")[&(t.into(), u.clone())],
        x,
        "a node's packet"
    );
    let dir = tempfile::tempdir().unwrap();
    let lib = lib_node(dir.path(), &app.base, "LIB");
    lib.sync().unwrap();
    assert_eq!(
        lib.get(t, &u).unwrap().unwrap().data.as_str(),
        x,
        "Node::get"
    );
    // A conflict keeps the loser's data exactly: A writes version 2, B's edit of version 1 loses.
    b.drain(&app);
    let upd = |data: &str| {
        with(
            with(change_fields(t, &u, data), "operation", Some("\"UPDATE\"")),
            "base_version",
            Some("1"),
        )
    };
    assert_eq!(send_change(&app, &mut a, &upd(y))["processed_count"], 1);
    let body = send_change(&app, &mut b, &upd(z));
    assert_eq!(body["conflict_count"], 1, "{body}");
    let (s, text) = http(&app, "GET", "/api/sync/conflicts", Some(ADMIN), None);
    assert_eq!(s, 200);
    let list: ConflictList = serde_json::from_str(&text).unwrap();
    assert_eq!(
        list.conflicts[0].serialized_data.as_str(),
        z,
        "conflict listing"
    );
    assert_eq!(admin_data(&app, t, &u).as_deref(), Some(y));
    lib.sync().unwrap();
    assert_eq!(
        lib.get(t, &u).unwrap().unwrap().data.as_str(),
        y,
        "Node::get v2"
    );
    // The admin write path keeps its text too.
    let (s, text) = http(
        &app,
        "PUT",
        &format!("/api/sync/entities/{t}/{u}"),
        Some(ADMIN),
        Some(format!("{{\"data\":{x}}}").as_bytes()),
    );
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        admin_data(&app, t, &u).as_deref(),
        Some(x),
        "admin PUT then GET"
    );
    lib.sync().unwrap();
    assert_eq!(
        lib.get(t, &u).unwrap().unwrap().data.as_str(),
        x,
        "Node::get v3"
    );
}

/// `1e400`, a lone surrogate and 128 levels of nesting used to be stored and then read back
/// as `null`; they are refused on every way in with the same rule.
#[test]
fn data_that_cannot_be_read_back_is_refused_on_every_way_in() {
    let app = TestApp::spawn_with("[conflicts]\ndefault = \"manual\"\n", &[]);
    let mut a = app.register("A");
    for data in [
        r#"{"n":1e400}"#.to_string(),
        r#"{"s":"\ud800"}"#.to_string(),
        nested(128),
    ] {
        let u = new_uuid();
        let body = send_change(&app, &mut a, &change_fields("Bad", &u, &data));
        assert_eq!(body["errors"][0]["reason"], "invalid_data", "{body:.400}");
        assert_eq!(admin_data(&app, "Bad", &u), None);
        let (s, text) = http(
            &app,
            "PUT",
            &format!("/api/sync/entities/Bad/{u}"),
            Some(ADMIN),
            Some(format!("{{\"data\":{data}}}").as_bytes()),
        );
        assert_eq!(
            (s, json_4xx("PUT", s, &text).as_str()),
            (422, "invalid_request")
        );
        assert_eq!(admin_data(&app, "Bad", &u), None);
    }
    // Conflict resolution: refused, and the conflict stays open.
    let u = new_uuid();
    let mut b = app.register("B");
    ok_sync(&app, &mut a, vec![upsert("Doc", &u, 0, json!({"v": 1}))]);
    b.drain(&app);
    ok_sync(&app, &mut a, vec![upsert("Doc", &u, 1, json!({"v": 2}))]);
    let ex = b.sync(&app, vec![upsert("Doc", &u, 1, json!({"v": 3}))]);
    let id = ex.body["conflicts"][0]["conflict_id"].as_str().unwrap();
    let (s, text) = http(
        &app,
        "POST",
        &format!("/api/sync/conflicts/{id}/resolve"),
        Some(ADMIN),
        Some(br#"{"data":{"n":1e400}}"#),
    );
    assert_eq!(
        (s, json_4xx("resolve", s, &text).as_str()),
        (422, "invalid_request")
    );
    assert_eq!(app.conflicts("?unresolved=true").len(), 1);
}

/// A NUL in a change's text (PostgreSQL: "invalid byte sequence for encoding UTF8: 0x00") is a
/// per-change error on both backends; the rest of the packet is applied and a resend of the
/// same packet is a duplicate, not a 500 forever.
#[test]
fn a_nul_rejects_its_change_alone_and_the_packet_is_not_stuck() {
    let app = TestApp::spawn();
    let node = app.register("A");
    let (good, bad_id, bad_type) = (new_uuid(), new_uuid(), new_uuid());
    let changes = [
        object(&change_fields("Note", &good, r#"{"v":1}"#)),
        object(&with(
            change_fields("Note", &bad_id, r#"{"v":1}"#),
            "change_id",
            Some(r#""c\u0000""#),
        )),
        object(&change_fields("No\u{0}te", &bad_type, r#"{"v":1}"#)),
    ];
    let text = object(&packet_fields(&node, 1, 0, &changes));
    for attempt in 0..2 {
        let (s, body) = exchange_bytes(&app, &node, &envelope_of(&text));
        assert_eq!(s, 200, "attempt {attempt}: {body:.400}");
        let body = parse(&body);
        assert_eq!(body["duplicate"], attempt == 1);
        let reasons: Vec<&Value> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["reason"])
            .collect();
        assert_eq!(
            reasons,
            [&json!("invalid_change_id"), &json!("invalid_entity_type")]
        );
    }
    assert!(admin_data(&app, "Note", &good).is_some());
    assert_eq!(admin_data(&app, "Note", &bad_id), None);
    // Names and descriptions with NUL are refused before the database too.
    let (s, text) = http(
        &app,
        "POST",
        "/api/sync/register",
        Some(ADMIN),
        Some(br#"{"code":"N1","name":"x\u0000"}"#),
    );
    assert_eq!(
        (s, json_4xx("register", s, &text).as_str()),
        (422, "invalid_request")
    );
    let (s, text) = http(
        &app,
        "GET",
        "/api/sync/conflicts?node_id=%00",
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (s, json_4xx("query", s, &text).as_str()),
        (422, "invalid_request")
    );
    let (s, text) = http(
        &app,
        "POST",
        "/api/sync/nodes/%00/disable",
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (s, json_4xx("path", s, &text).as_str()),
        (422, "invalid_request")
    );
}

/// Runs SQL on the app's own database, on either backend.
fn exec_sql(app: &TestApp, sqlite: &str, postgres: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let db = app.db.as_ref().unwrap();
    let url = db.url(&app.path());
    if db.is_postgres() {
        let mut c = diesel::PgConnection::establish(&url).unwrap();
        c.batch_execute(postgres).unwrap();
    } else {
        let mut c = diesel::SqliteConnection::establish(&url).unwrap();
        c.batch_execute(&format!("PRAGMA busy_timeout = 10000; {sqlite}"))
            .unwrap();
    }
}

/// A change the database refuses for its values (here a trigger stands in for any data error
/// the checks did not foresee) is rejected alone (`database_refused`); the packet is applied
/// and acknowledged instead of failing on every resend.
#[test]
fn a_change_the_database_refuses_is_rejected_alone() {
    let app = TestApp::spawn();
    exec_sql(
        &app,
        "CREATE TRIGGER poison BEFORE INSERT ON entities WHEN NEW.entity_type = 'Poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned value'); END;",
        "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN
           IF NEW.entity_type = 'Poison' THEN
             RAISE EXCEPTION 'poisoned value' USING ERRCODE = '22000';
           END IF;
           RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER poison BEFORE INSERT ON entities FOR EACH ROW EXECUTE FUNCTION poison();",
    );
    let mut node = app.register("A");
    let (n1, p, n2) = (new_uuid(), new_uuid(), new_uuid());
    let changes = [
        object(&change_fields("Note", &n1, r#"{"v":1}"#)),
        object(&change_fields("Poison", &p, r#"{"v":1}"#)),
        object(&change_fields(
            "Note",
            &n2,
            r#"{"big":18446744073709551616}"#,
        )),
    ];
    let text = object(&packet_fields(&node, 1, 0, &changes));
    for attempt in 0..2 {
        let (s, body) = exchange_bytes(&app, &node, &envelope_of(&text));
        assert_eq!(s, 200, "attempt {attempt}: {body:.400}");
        let body = parse(&body);
        assert_eq!(body["duplicate"], attempt == 1, "{body}");
        assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
        assert_eq!(body["errors"][0]["entity_uuid"], p.as_str());
        assert_eq!(body["errors"][0]["reason"], "database_refused");
    }
    node.next_packet_no = 2;
    assert!(admin_data(&app, "Note", &n1).is_some());
    assert_eq!(
        admin_data(&app, "Note", &n2).as_deref(),
        Some(r#"{"big":18446744073709551616}"#)
    );
    assert_eq!(admin_data(&app, "Poison", &p), None);
    // The node goes on, and a refused value is not a failing database.
    let body = send_change(&app, &mut node, &change_fields("Note", &new_uuid(), "{}"));
    assert_eq!(body["processed_count"], 1);
    assert_eq!(app.get("/health", None).0, 200);
}

/// `updated_at` far in the future used to win `timestamp_wins` forever, and an empty one was
/// documented as refused: both are `invalid_updated_at`; the bound is configurable.
#[test]
fn timestamps_ahead_of_the_server_clock_are_refused() {
    let config = "[conflicts.types.Stamp]\nstrategy = \"timestamp_wins\"\n";
    let app = TestApp::spawn_with(config, &[]);
    let mut a = app.register("A");
    let mut b = app.register("B");
    let u = new_uuid();
    ok_sync(
        &app,
        &mut a,
        vec![upsert("Stamp", &u, 0, json!({"v": "a"}))],
    );
    b.drain(&app);
    let ahead = |d: chrono::Duration| starsync_protocol::format_ts(chrono::Utc::now() + d);
    for ts in [
        "9999-12-31T23:59:59Z".to_string(),
        ahead(chrono::Duration::minutes(11)),
        String::new(),
    ] {
        let mut c = upsert("Stamp", &u, 1, json!({"v": "far"}));
        c["updated_at"] = json!(ts);
        let ex = a.sync(&app, vec![c]);
        assert_eq!(
            ex.body["errors"][0]["reason"], "invalid_updated_at",
            "{ts:?}: {}",
            ex.body
        );
    }
    // B's later edit is not beaten by a date in 9999: it is applied normally.
    let ex = b.sync(&app, vec![upsert("Stamp", &u, 1, json!({"v": "b"}))]);
    assert_eq!(
        (
            ex.body["processed_count"].clone(),
            ex.body["conflict_count"].clone()
        ),
        (json!(1), json!(0))
    );
    // Within the default 600 s it is accepted.
    let mut c = upsert("Stamp", &new_uuid(), 0, json!({"v": 1}));
    c["updated_at"] = json!(ahead(chrono::Duration::minutes(9)));
    ok_sync(&app, &mut a, vec![c]);
    // STARSYNC_MAX_CLOCK_SKEW_SECS narrows it.
    let app = TestApp::spawn_with("", &[("STARSYNC_MAX_CLOCK_SKEW_SECS", "60")]);
    let mut a = app.register("A");
    let mut c = upsert("Note", &new_uuid(), 0, json!({"v": 1}));
    c["updated_at"] = json!(ahead(chrono::Duration::minutes(2)));
    let ex = a.sync(&app, vec![c]);
    assert_eq!(
        ex.body["errors"][0]["reason"], "invalid_updated_at",
        "{}",
        ex.body
    );
    let mut c = upsert("Note", &new_uuid(), 0, json!({"v": 1}));
    c["updated_at"] = json!(ahead(chrono::Duration::seconds(30)));
    ok_sync(&app, &mut a, vec![c]);
}

/// While every write fails (a trigger on the writer lock row stands in for a full disk), the
/// writes answer 500 without using up anything, and `/health` answers 503
/// `database_write_failed` — until a write succeeds again.
#[test]
fn health_reports_failing_writes_until_one_succeeds() {
    let app = TestApp::spawn();
    let mut node = app.register("A");
    assert_eq!(app.get("/health", None).0, 200);
    exec_sql(
        &app,
        "CREATE TRIGGER disk_full BEFORE UPDATE ON server_state
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        "CREATE FUNCTION full_disk() RETURNS trigger AS $$ BEGIN
           RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100';
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER disk_full BEFORE UPDATE ON server_state FOR EACH ROW EXECUTE FUNCTION full_disk();",
    );
    let u = new_uuid();
    let (s, text) = http(
        &app,
        "PUT",
        &format!("/api/sync/entities/Note/{u}"),
        Some(ADMIN),
        Some(br#"{"data":{"v":1}}"#),
    );
    assert_eq!(s, 500, "{text}");
    assert_eq!(parse(&text)["error"], "internal_error");
    let ex = node.sync(&app, vec![upsert("Note", &new_uuid(), 0, json!({"v": 1}))]);
    assert_eq!(ex.status, 500, "{}", ex.body);
    for _ in 0..2 {
        let (s, body) = app.get("/health", None);
        assert_eq!(s, 503, "{body}");
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["error"], "database_write_failed");
        assert!(
            body["message"].as_str().unwrap().contains("write"),
            "{body}"
        );
    }
    assert_eq!(
        app.node_status(&node)["received_packet_no"],
        0,
        "nothing was used up"
    );
    exec_sql(
        &app,
        "DROP TRIGGER disk_full;",
        "DROP TRIGGER disk_full ON server_state;",
    );
    assert_eq!(
        app.get("/health", None).0,
        200,
        "the health check's own write succeeded"
    );
    let ex = node.sync(&app, vec![upsert("Note", &new_uuid(), 0, json!({"v": 1}))]);
    assert_eq!(ex.status, 200, "{}", ex.body);
}

/// Requests actix-http refuses in its HTTP/1 codec, before any middleware (so their bodies are
/// empty; see `api/middleware.rs`): 4xx, never a 5xx, and the server keeps serving.
#[test]
fn malformed_http_is_refused_with_a_4xx() {
    let app = TestApp::spawn();
    let headers: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        (
            "100 headers",
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n"),
            431,
        ),
        (
            "chunked and Content-Length",
            "POST /api/sync/exchange HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_string(),
            400,
        ),
        (
            "a 100 KB query string",
            format!(
                "GET /api/sync/conflicts?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(100 * 1024)
            ),
            400,
        ),
    ];
    for (name, request, status) in cases {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", app.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        let line = String::from_utf8_lossy(&head);
        assert_eq!(line, format!("HTTP/1.1 {status}"), "{name}");
        assert_eq!(
            app.get("/health", None).0,
            200,
            "{name}: the server stopped serving"
        );
    }
}
