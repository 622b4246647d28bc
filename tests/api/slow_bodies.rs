//! A request body must keep arriving: a client with a valid token that stalls or trickles its
//! upload is answered 408 `request_timeout` and its connection closed, while a slow but steady
//! upload still succeeds. (How many slow connections the server survives is measured by the
//! benchmark, `cargo bench --bench sync -- --only abuse`, not here.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::*;
use serde_json::{json, Value};

/// 1 s of grace, then at least 1,024 bytes per second.
fn app() -> TestApp {
    TestApp::spawn_with(
        "",
        &[
            ("STARSYNC_BODY_TIMEOUT_SECS", "1"),
            ("STARSYNC_BODY_MIN_BYTES_PER_SEC", "1024"),
        ],
    )
}

/// Opens a connection and sends the head of an exchange that announces `length` body bytes.
fn start_exchange(app: &TestApp, token: &str, length: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", app.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /api/sync/exchange HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads a whole response (the server closes the connection after it); returns the status
/// and the JSON body.
fn read_response(s: &mut TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("the server answers and closes");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body}"));
    (status, body)
}

#[test]
fn a_stalled_body_is_answered_408_and_its_connection_closed() {
    let app = app();
    let a = app.register("A");
    let mut s = start_exchange(&app, &a.token, 100_000);
    s.write_all(br#"{"packet_data": "1f8b"#).unwrap();
    let t = Instant::now();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], "request_timeout", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("too slow"),
        "{body}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "the grace is kept"
    );
    // Nothing was applied, and the node goes on normally.
    assert_eq!(app.node_status(&a)["received_packet_no"], 0);
    let mut a = a;
    assert_eq!(a.sync(&app, vec![]).status, 200);
}

#[test]
fn a_trickling_body_is_cut_after_the_grace() {
    let app = app();
    let a = app.register("A");
    let mut s = start_exchange(&app, &a.token, 100_000);
    // 10 bytes a second, far below the minimum rate: cut once the grace is used up, although
    // bytes keep coming.
    let t = Instant::now();
    let mut answered = None;
    for _ in 0..15 {
        if s.write_all(b"aaaaaaaaaa").is_err() {
            answered = Some(t.elapsed());
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        let mut peek = [0u8; 1];
        if matches!(s.peek(&mut peek), Ok(n) if n > 0) {
            answered = Some(t.elapsed());
            break;
        }
    }
    let elapsed = answered.expect("the server answers a trickling body");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (status, body) = read_response(&mut s);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"], "request_timeout", "{body}");
}

#[test]
fn a_slow_but_steady_body_is_accepted() {
    let app = app();
    let mut a = app.register("A");
    let u = new_uuid();
    // Random hex hardly compresses: the envelope is several KiB, sent at ~2.5 KiB/s, so it
    // takes longer than the grace but keeps ahead of the minimum rate.
    let noise: String = (0..200).map(|_| new_uuid()).collect();
    let packet = a.packet(1, 0, vec![upsert("Note", &u, 0, json!({"noise": noise}))]);
    let envelope = json!({"packet_data": encode(&packet)}).to_string();
    assert!(envelope.len() > 4000, "{}", envelope.len());
    let mut s = start_exchange(&app, &a.token, envelope.len());
    let t = Instant::now();
    for piece in envelope.as_bytes().chunks(250) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        t.elapsed() > Duration::from_secs(1),
        "slower than the grace"
    );
    let mut raw = vec![0u8; 1 << 16];
    let n = s.read(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    a.next_packet_no = 2;
    assert_eq!(app.node_status(&a)["received_packet_no"], 1);
    assert_eq!(app.entity("Note", &u).0, 200);
}
