//! `GET /api/openapi.json` (PROTOCOL §9): valid OpenAPI 3.1 whose references all resolve, and
//! in step with the routes the server really mounts, both ways: every mounted path is described,
//! every described operation is mounted, and no undescribed method is mounted on a described path.
use crate::helpers::*;

use std::path::Path;

use serde_json::Value;
use starsync_protocol::ErrorCode;

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH"];

/// Paths the description leaves out on purpose: the dashboard's static files (text/html, CSS,
/// script; docs/dashboard.md), not an API.
fn undescribed(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

fn description(app: &TestApp) -> Value {
    let (status, doc) = app.get("/api/openapi.json", None);
    assert_eq!(status, 200, "{doc}");
    doc
}

/// Follows a local JSON pointer (`#/components/schemas/X`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn openapi_is_3_1_and_every_reference_resolves() {
    let app = TestApp::spawn();
    let doc = description(&app);
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi = {version:?}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 20, "suspiciously few $refs: {found:?}");
    for r in found {
        assert!(resolve(&doc, r).is_some(), "$ref {r} does not resolve");
    }

    // The error body's `error` is the whole ErrorCode vocabulary.
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, expected);
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    for scheme in ["admin_token", "node_token"] {
        assert_eq!(
            doc["components"]["securitySchemes"][scheme]["scheme"], "bearer",
            "{scheme}"
        );
    }

    // Every operation: a unique id, and every non-2xx answer described with the error body
    // (the health check's 503 has its own body).
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_string()),
                "{method} {path}: operationId {id:?} repeated"
            );
            for (status, answer) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') || path == "/health" {
                    continue;
                }
                let schema = &answer["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["allOf"][0]["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path} {status}: {answer}"
                );
            }
            if op.get("security").is_some() {
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path}: authenticated but no 401 described"
                );
            }
        }
    }
}

/// Every `resource("…")` path in src/api: what the server mounts (each module's `configure`).
fn mounted_paths() -> Vec<String> {
    let mut paths = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split("resource(\"").skip(1) {
                    if let Some((p, _)) = piece.split_once('"') {
                        paths.push(p.to_string());
                    }
                }
            }
        }
    }
    assert!(paths.len() >= 15, "route scan found too few: {paths:?}");
    paths
}

/// One request with no token: (status, body).
fn call(app: &TestApp, method: &str, path: &str) -> (u16, Value) {
    let req = ureq::request(method, &app.url(path)).set("Content-Type", "application/json");
    let res = if matches!(method, "POST" | "PUT" | "PATCH") {
        req.send_bytes(b"{}")
    } else {
        req.call()
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let body = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn every_mounted_route_is_described_and_every_described_route_is_mounted() {
    let app = TestApp::spawn();
    let doc = description(&app);
    let described = doc["paths"].as_object().unwrap();

    for path in mounted_paths() {
        if undescribed(&path) {
            continue;
        }
        assert!(
            described.contains_key(&path),
            "{path} is mounted but missing from /api/openapi.json"
        );
    }

    for (path, item) in described {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            let (status, body) = call(&app, method, &concrete);
            if item.get(method.to_lowercase()).is_some() {
                // Mounted: anything but the 404 of an unknown path or a 405 (no token: 401,
                // or 200 for the open routes).
                assert!(
                    status != 404 && status != 405,
                    "{method} {path} is described but answers {status}: {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is not described, yet answers {status}: {body}"
                );
            }
        }
    }
}
