//! `STARSYNC_LOG_FORMAT=json` (PROTOCOL §9): `starsync serve` as a process writes one JSON object
//! per line; every line logged while handling a request — the HTTP line and the engine's lines,
//! which run on another thread — carries the request id answered in `X-Request-Id`; tokens and
//! packet content never appear.
use crate::helpers::*;

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A `starsync serve` process logging JSON; its stderr lines arrive on `lines`.
struct JsonServer {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
    base: String,
}

impl JsonServer {
    fn spawn(app: &TestApp) -> JsonServer {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_starsync"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(app.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in app.cli_env() {
            cmd.env(k, v);
        }
        cmd.env("STARSYNC_LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut server = JsonServer {
            child,
            lines,
            seen: Vec::new(),
            base: String::new(),
        };
        let started = server
            .wait_for(|line| message(line).is_some_and(|m| m.contains("listening on http://")));
        let m = message(&started).unwrap();
        server.base = m[m.find("http://").unwrap()..].trim().to_string();
        server
    }

    /// Waits (10 s at most) for a line that `pred` accepts, keeping every line read.
    fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("never logged; log so far:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if pred(&v) {
                    return v;
                }
            }
        }
    }

    /// POSTs JSON with an optional `X-Request-Id`: (status, body, the answer's request id).
    fn post(
        &self,
        path: &str,
        token: Option<&str>,
        request_id: Option<&str>,
        body: &[u8],
    ) -> (u16, Value, String) {
        let mut req =
            ureq::post(&format!("{}{path}", self.base)).set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(id) = request_id {
            req = req.set("X-Request-Id", id);
        }
        let resp = match req.send_bytes(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let status = resp.status();
        let id = resp.header("X-Request-Id").unwrap_or_default().to_string();
        let body = serde_json::from_str(&resp.into_string().unwrap()).unwrap_or(Value::Null);
        (status, body, id)
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(line: &Value) -> Option<&str> {
    line["fields"]["message"].as_str()
}

fn request_id(line: &Value) -> Option<&str> {
    line["span"]["request_id"].as_str()
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id_and_no_secrets() {
    let app = TestApp::spawn();
    let mut server = JsonServer::spawn(&app);

    // A registration whose id the caller chose (a proxy's): kept.
    let (status, reg, id) = server.post(
        "/api/sync/register",
        Some(ADMIN),
        Some("proxy-req-7"),
        json!({"code": "JSONLOG-1"}).to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{reg}");
    assert_eq!(id, "proxy-req-7");
    let node = TestNode {
        id: reg["node_id"].as_str().unwrap().to_string(),
        token: reg["auth_token"].as_str().unwrap().to_string(),
        code: "JSONLOG-1".into(),
        server_id: reg["server_node_id"].as_str().unwrap().to_string(),
        next_packet_no: 1,
        acked: 0,
        entities: Default::default(),
    };

    // An exchange carrying data that must never reach the log; the server makes up its id.
    let secret = "do-not-log-this-entity-content";
    let packet = node.packet(
        1,
        0,
        vec![upsert("Task", &new_uuid(), 0, json!({"title": secret}))],
    );
    let packet_hex = encode(&packet);
    let (status, answer, exchange_id) = server.post(
        "/api/sync/exchange",
        Some(&node.token),
        None,
        json!({"packet_data": packet_hex}).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(exchange_id.len(), 32, "{exchange_id}");
    assert!(exchange_id.bytes().all(|b| b.is_ascii_hexdigit()));

    // A bad request (not JSON), whose offered id is unsafe and replaced.
    let (status, bad, bad_id) = server.post(
        "/api/sync/register",
        Some(ADMIN),
        Some("no spaces {allowed}"),
        b"{not json",
    );
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad_id.len(), 32, "{bad_id}");

    // Each request's HTTP line, and the engine's lines logged on blocking threads, carry its id.
    for (id, status) in [
        ("proxy-req-7", 201),
        (exchange_id.as_str(), 200),
        (bad_id.as_str(), 400),
    ] {
        let line =
            server.wait_for(|l| l["target"] == "starsync::http" && request_id(l) == Some(id));
        assert_eq!(line["fields"]["status"], status, "{line}");
        assert!(line["fields"]["path"].is_string(), "{line}");
    }
    let registered = server
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| message(l) == Some("node registered"))
        .expect("the registration is logged");
    assert_eq!(request_id(&registered), Some("proxy-req-7"), "{registered}");
    let exchanged = server
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| message(l) == Some("exchange"))
        .expect("the exchange is logged");
    assert_eq!(
        request_id(&exchanged),
        Some(exchange_id.as_str()),
        "{exchanged}"
    );

    // Stop the server and read everything it wrote.
    let _ = server.child.kill();
    let _ = server.child.wait();
    while let Ok(line) = server.lines.recv_timeout(Duration::from_secs(5)) {
        server.seen.push(line);
    }
    assert!(server.seen.len() >= 8, "{}", server.seen.join("\n"));
    for line in &server.seen {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string() && v["fields"].is_object(),
            "{line}"
        );
        for (what, needle) in [
            ("the admin token", ADMIN),
            ("the node token", node.token.as_str()),
            ("entity data", secret),
            ("the packet", &packet_hex[..64]),
        ] {
            assert!(!line.contains(needle), "{what} was logged: {line}");
        }
    }
}
