//! WatermelonDB's `synchronize()` (PROTOCOL §11.1): the HTTP contract, and the real library
//! end to end (`tests/watermelon/run.js`, Node 20 + `@nozbe/watermelondb` + LokiJS) beside a
//! `starsync-node` desktop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;
use serde_json::{json, Value};

fn pull(app: &TestApp, token: Option<&str>, last: &str) -> (u16, Value) {
    app.get(
        &format!("/api/sync/watermelon/pull?last_pulled_at={last}&schema_version=1&migration=null"),
        token,
    )
}

/// A pull that must succeed: its changes and timestamp.
fn pull_ok(app: &TestApp, token: &str, last: Option<i64>) -> (Value, i64) {
    let last = last.map_or("null".to_string(), |l| l.to_string());
    let (s, body) = pull(app, Some(token), &last);
    assert_eq!(s, 200, "{body}");
    let ts = body["timestamp"]
        .as_i64()
        .unwrap_or_else(|| panic!("timestamp is a JSON number: {body}"));
    (body["changes"].clone(), ts)
}

fn push(app: &TestApp, token: Option<&str>, changes: Value, last: i64) -> (u16, Value) {
    app.post(
        "/api/sync/watermelon/push",
        token,
        &json!({"changes": changes, "last_pulled_at": last}),
    )
}

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.get("id").unwrap_or(r).as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn table(created: Value, updated: Value, deleted: Value) -> Value {
    json!({"created": created, "updated": updated, "deleted": deleted})
}

#[test]
fn first_pull_sends_every_live_entity_as_created_with_a_fresh_numeric_timestamp() {
    let app = TestApp::spawn();
    let mut desk = app.register("DESK");
    let wm = app.register("APP");
    let (a, b, gone) = (new_uuid(), new_uuid(), new_uuid());
    desk.sync(
        &app,
        vec![
            upsert(
                "tasks",
                &a,
                0,
                json!({"title": "a", "n": 1.50, "id": "ignored"}),
            ),
            upsert("tasks", &b, 0, json!({"title": "b"})),
            upsert("projects", &gone, 0, json!({"name": "x"})),
        ],
    );
    desk.sync(&app, vec![delete("projects", &gone, 1)]);

    let (changes, t1) = pull_ok(&app, &wm.token, None);
    assert_eq!(ids(&changes["tasks"]["created"]), {
        let mut v = vec![a.clone(), b.clone()];
        v.sort();
        v
    });
    assert_eq!(changes["tasks"]["updated"], json!([]));
    assert_eq!(changes["tasks"]["deleted"], json!([]));
    assert!(
        changes.get("projects").is_none(),
        "no deletions on a first pull: {changes}"
    );
    let rec = changes["tasks"]["created"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == a.as_str())
        .unwrap()
        .clone();
    assert_eq!(rec, json!({"id": a, "title": "a", "n": 1.5}));
    assert!(rec.get("_status").is_none() && rec.get("_changed").is_none());

    // Every pull hands out a timestamp no other pull got, even with nothing new.
    let (changes2, t2) = pull_ok(&app, &wm.token, Some(t1));
    assert_eq!(changes2, json!({}));
    assert!(t2 > t1 && t1 > 0, "{t1} {t2}");
    let (_, t3) = pull_ok(&app, &wm.token, Some(t1));
    assert!(t3 > t2);
    for raw in ["0", "null", ""] {
        let (s, body) = pull(&app, Some(&wm.token), raw);
        assert_eq!(s, 200, "{raw}: {body}");
        assert_eq!(ids(&body["changes"]["tasks"]["created"]).len(), 2, "{raw}");
    }
}

#[test]
fn own_pushed_records_come_back_updated_while_another_app_on_the_token_gets_created() {
    let app = TestApp::spawn();
    let wm = app.register("APP");
    let mut desk = app.register("DESK");
    let (_, first_a) = pull_ok(&app, &wm.token, None);
    let (_, first_b) = pull_ok(&app, &wm.token, None);
    // WatermelonDB's own kind of id: 16 characters, mixed case.
    let mine = "a1B2c3D4e5F6g7H8".to_string();
    let (s, body) = push(
        &app,
        Some(&wm.token),
        json!({"tasks": table(
            json!([{"id": mine, "_status": "created", "_changed": "", "title": "mine"}]),
            json!([]), json!([]))}),
        first_a,
    );
    assert_eq!((s, body), (200, json!({"experimentalRejectedIds": {}})));

    // The node's status shows the app's activity.
    let status = app.node_status(&wm);
    assert!(
        status["last_sync_in"].is_string() && status["last_sync_out"].is_string(),
        "{status}"
    );

    // App A (the pusher) pulls from the cursor its push carried: `updated`.
    let (changes, _) = pull_ok(&app, &wm.token, Some(first_a));
    assert_eq!(ids(&changes["tasks"]["updated"]), vec![mine.clone()]);
    assert_eq!(changes["tasks"]["created"], json!([]));
    // App B, same token, its own cursor: `created`.
    let (changes, _) = pull_ok(&app, &wm.token, Some(first_b));
    assert_eq!(ids(&changes["tasks"]["created"]), vec![mine.clone()]);
    assert_eq!(changes["tasks"]["updated"], json!([]));

    // The desktop gets it through packets, without bookkeeping fields.
    let got = desk.drain(&app);
    let c = got
        .iter()
        .find(|c| c["entity_uuid"] == mine.as_str())
        .unwrap();
    assert_eq!(c["data"], json!({"title": "mine"}));
    // And a deletion on the desktop reaches both apps as `deleted`.
    desk.sync(&app, vec![delete("tasks", &mine, 1)]);
    let (changes, _) = pull_ok(&app, &wm.token, Some(first_a));
    // A table with only a deletion still has all three lists (a missing one crashes the client).
    assert_eq!(
        changes,
        json!({"tasks": table(json!([]), json!([]), json!([mine]))})
    );
    // An app that never held it is told nothing about it.
    let (_, fresh) = pull_ok(&app, &wm.token, None);
    let (changes, _) = pull_ok(&app, &wm.token, Some(fresh));
    assert_eq!(changes, json!({}));
}

#[test]
fn a_push_based_on_a_stale_pull_is_refused_whole_with_409() {
    let app = TestApp::spawn();
    let wm = app.register("APP");
    let mut desk = app.register("DESK");
    let x = new_uuid();
    desk.sync(&app, vec![upsert("tasks", &x, 0, json!({"title": "x"}))]);
    let (_, t) = pull_ok(&app, &wm.token, None);
    // The desktop edits x after the app's pull.
    desk.sync(&app, vec![upsert("tasks", &x, 1, json!({"title": "desk"}))]);
    let other = new_uuid();
    let (s, body) = push(
        &app,
        Some(&wm.token),
        json!({"tasks": table(
            json!([{"id": other, "title": "new"}]),
            json!([{"id": x, "title": "app", "_status": "updated", "_changed": "title"}]),
            json!([]))}),
        t,
    );
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    assert!(body["message"].as_str().unwrap().contains(&x), "{body}");
    assert_eq!(app.entity("tasks", &other).0, 404, "nothing applied");
    assert_eq!(app.entity("tasks", &x).1["data"], json!({"title": "desk"}));

    // A deletion against the edit is refused too; after a pull, both go through.
    let (s, _) = push(
        &app,
        Some(&wm.token),
        json!({"tasks": table(json!([]), json!([]), json!([x]))}),
        t,
    );
    assert_eq!(s, 409);
    let (changes, t2) = pull_ok(&app, &wm.token, Some(t));
    assert_eq!(ids(&changes["tasks"]["updated"]), vec![x.clone()]);
    let (s, body) = push(
        &app,
        Some(&wm.token),
        json!({"tasks": table(json!([{"id": other, "title": "new"}]), json!([{"id": x, "title": "app"}]), json!([]))}),
        t2,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(app.entity("tasks", &x).1["data"], json!({"title": "app"}));
    assert_eq!(
        app.entity("tasks", &other).1["data"],
        json!({"title": "new"})
    );
}

#[test]
fn re_pushes_unknown_updates_and_double_deletes_are_applied_as_the_protocol_says() {
    let app = TestApp::spawn();
    let wm = app.register("APP");
    let (_, t) = pull_ok(&app, &wm.token, None);
    let (a, b, never) = (new_uuid(), new_uuid(), new_uuid());
    let created = json!({"tasks": table(json!([{"id": a, "title": "a"}]), json!([]), json!([]))});
    assert_eq!(push(&app, Some(&wm.token), created.clone(), t).0, 200);
    // The answer was lost: the client pulls (its record comes back `updated`) and pushes the
    // same `created` again: an update, one entity, no conflict.
    let (changes, t2) = pull_ok(&app, &wm.token, Some(t));
    assert_eq!(ids(&changes["tasks"]["updated"]), vec![a.clone()]);
    assert_eq!(push(&app, Some(&wm.token), created, t2).0, 200);
    let (_, e) = app.entity("tasks", &a);
    assert_eq!(
        (e["version"].clone(), e["data"].clone()),
        (json!(2), json!({"title": "a"}))
    );
    assert!(app.conflicts("").is_empty());
    // `updated` for an unknown id creates it; deleting an unknown id is ignored.
    let (s, body) = push(
        &app,
        Some(&wm.token),
        json!({"tasks": table(json!([]), json!([{"id": b, "title": "b"}]), json!([never]))}),
        t2,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(app.entity("tasks", &b).1["version"], 1);
    assert_eq!(app.entity("tasks", &never).0, 404);
    // Two clients deleting one record (both pulled at t3): no conflict.
    let (_, t3) = pull_ok(&app, &wm.token, Some(t2));
    let del = json!({"tasks": table(json!([]), json!([]), json!([b]))});
    assert_eq!(push(&app, Some(&wm.token), del.clone(), t3).0, 200);
    assert_eq!(push(&app, Some(&wm.token), del, t3).0, 200);
    let (s, e) = app.entity("tasks", &b);
    assert!(s == 404 || e["deleted"] == true, "{s} {e}");
}

#[test]
fn immutable_types_are_rejected_per_record_and_the_rest_is_applied() {
    let app = TestApp::spawn_with("[conflicts.types.rates]\nimmutable = true\n", &[]);
    let wm = app.register("APP");
    let (_, t) = pull_ok(&app, &wm.token, None);
    let (rate, task) = (new_uuid(), new_uuid());
    let (s, body) = push(
        &app,
        Some(&wm.token),
        json!({
            "rates": table(json!([{"id": rate, "value": 3}]), json!([]), json!([])),
            "tasks": table(json!([{"id": task, "title": "t"}]), json!([]), json!([])),
        }),
        t,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"experimentalRejectedIds": {"rates": [rate]}}));
    assert_eq!(app.entity("rates", &rate).0, 404);
    assert_eq!(app.entity("tasks", &task).0, 200);
}

#[test]
fn bad_requests_are_clear_errors_and_apply_nothing() {
    let app = TestApp::spawn();
    let wm = app.register("APP");
    let (_, t) = pull_ok(&app, &wm.token, None);
    let ok = new_uuid();
    let good = json!({"id": ok, "title": "ok"});
    for (what, changes, last) in [
        (
            "record without id",
            json!({"tasks": table(json!([good, {"title": "x"}]), json!([]), json!([]))}),
            json!(t),
        ),
        (
            "bad table name",
            json!({"tasks": table(json!([good]), json!([]), json!([])), "9bad": table(json!([{"id": new_uuid()}]), json!([]), json!([]))}),
            json!(t),
        ),
        (
            "record not an object",
            json!({"tasks": table(json!([good, 5]), json!([]), json!([]))}),
            json!(t),
        ),
        (
            "cursor not a number",
            json!({"tasks": table(json!([good]), json!([]), json!([]))}),
            json!("x"),
        ),
        (
            "cursor beyond 2^53-1",
            json!({"tasks": table(json!([good]), json!([]), json!([]))}),
            json!(9007199254740992_i64),
        ),
        (
            "cursor missing",
            json!({"tasks": table(json!([good]), json!([]), json!([]))}),
            Value::Null,
        ),
    ] {
        let mut body = json!({"changes": changes});
        if !last.is_null() {
            body["last_pulled_at"] = last;
        }
        let (s, answer) = app.post("/api/sync/watermelon/push", Some(&wm.token), &body);
        assert_eq!(s, 422, "{what}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{what}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(app.entity("tasks", &ok).0, 404, "{what}: nothing applied");
    }
    let (s, answer) = app.post_raw("/api/sync/watermelon/push", Some(&wm.token), b"[1]");
    assert_eq!(
        (s, answer["error"].clone()),
        (422, json!("invalid_request"))
    );
    let (s, answer) = app.post_raw("/api/sync/watermelon/push", Some(&wm.token), b"{nope");
    assert_eq!(
        (s, answer["error"].clone()),
        (400, json!("invalid_request"))
    );
    for bad in ["-1", "abc", "1.5", "9007199254740992"] {
        let (s, answer) = pull(&app, Some(&wm.token), bad);
        assert_eq!(
            (s, answer["error"].clone()),
            (422, json!("invalid_request")),
            "{bad}"
        );
    }
    // Tokens: none, unknown, the admin's.
    for token in [None, Some("wrong"), Some(ADMIN)] {
        let (s, answer) = pull(&app, token, "null");
        assert_eq!(
            (s, answer["error"].clone()),
            (401, json!("unauthorized")),
            "{token:?}"
        );
        let (s, answer) = push(&app, token, json!({}), t);
        assert_eq!(
            (s, answer["error"].clone()),
            (401, json!("unauthorized")),
            "{token:?}"
        );
    }
    // A disabled node's token: 401 on both, nothing applied.
    let (s, _) = app.post(
        &format!("/api/sync/nodes/{}/disable", wm.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(s, 200);
    assert_eq!(pull(&app, Some(&wm.token), "null").0, 401);
    let one = json!({"tasks": table(json!([good]), json!([]), json!([]))});
    assert_eq!(push(&app, Some(&wm.token), one, t).0, 401);
    assert_eq!(app.entity("tasks", &ok).0, 404);
}

#[test]
fn the_pull_is_gzipped_when_the_client_accepts_it_and_cursors_survive_a_restart() {
    let app = TestApp::spawn();
    let wm = app.register("APP");
    let mut desk = app.register("DESK");
    let changes: Vec<Value> = (0..1200)
        .map(|i| {
            upsert(
                "tasks",
                &new_uuid(),
                0,
                json!({"title": format!("task {i}"), "i": i}),
            )
        })
        .collect();
    for chunk in changes.chunks(100) {
        desk.sync(&app, chunk.to_vec());
    }
    // By hand: the HTTP client of these tests would inflate the answer out of sight.
    let (head, gz) = raw_get(
        &app,
        "/api/sync/watermelon/pull?last_pulled_at=null",
        &[
            ("Authorization", &format!("Bearer {}", wm.token)),
            ("Accept-Encoding", "gzip"),
        ],
    );
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        gz.len() * 2 < text.len(),
        "{} bytes of gzip for {}",
        gz.len(),
        text.len()
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["changes"]["tasks"]["created"]
            .as_array()
            .unwrap()
            .len(),
        1200
    );
    let t = body["timestamp"].as_i64().unwrap();

    let (_, t_other) = pull_ok(&app, &wm.token, None);
    let mine = new_uuid();
    push(
        &app,
        Some(&wm.token),
        json!({"tasks": table(json!([{"id": mine, "title": "m"}]), json!([]), json!([]))}),
        t,
    );
    let app = app.restart();
    // After a restart the cursors mean what they meant: the pusher gets `updated`, the other
    // app `created`, and nothing else.
    let (changes, t2) = pull_ok(&app, &wm.token, Some(t));
    assert_eq!(
        changes,
        json!({"tasks": table(json!([]), json!([{"id": mine, "title": "m"}]), json!([]))})
    );
    let (changes, _) = pull_ok(&app, &wm.token, Some(t_other));
    assert_eq!(ids(&changes["tasks"]["created"]), vec![mine.clone()]);
    assert!(t2 > t);
}

/// A GET over a plain socket: the answer's head and its body (chunked transfer undone).
fn raw_get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
    raw_get_pausing(app, path, headers, 0, || {})
}

/// [`raw_get`], running `meanwhile` after the first `first` bytes of the answer arrived and
/// before reading the rest.
fn raw_get_pausing(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    first: usize,
    meanwhile: impl FnOnce(),
) -> (String, Vec<u8>) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", app.port)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut all = vec![0; first];
    s.read_exact(&mut all).unwrap();
    meanwhile();
    s.read_to_end(&mut all).unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..at]).into_owned();
    let mut rest = &all[at + 4..];
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[test]
fn a_pull_answers_from_one_snapshot_while_the_data_changes_under_it() {
    let app = TestApp::spawn();
    let wm = app.register("APP");
    let mut desk = app.register("DESK");
    // Far more than the socket buffers hold, so the server is still writing the answer while
    // the desktop changes the data.
    let filler = "x".repeat(4000);
    let ids: Vec<String> = (0..4000).map(|_| new_uuid()).collect();
    for chunk in ids.chunks(100) {
        desk.sync(
            &app,
            chunk
                .iter()
                .map(|u| upsert("tasks", u, 0, json!({"title": "old", "pad": filler})))
                .collect(),
        );
    }
    // The entity with the newest change is in the last page of the answer.
    let last = ids.last().unwrap().clone();
    let fresh = new_uuid();
    let (_, body) = raw_get_pausing(
        &app,
        "/api/sync/watermelon/pull?last_pulled_at=null",
        &[("Authorization", &format!("Bearer {}", wm.token))],
        64 * 1024,
        || {
            desk.sync(
                &app,
                vec![
                    upsert("tasks", &last, 1, json!({"title": "new"})),
                    upsert("tasks", &fresh, 0, json!({"title": "fresh"})),
                ],
            );
        },
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    let created = body["changes"]["tasks"]["created"].as_array().unwrap();
    assert_eq!(
        created.len(),
        4000,
        "every entity of the snapshot, none added"
    );
    let old = created.iter().find(|r| r["id"] == last.as_str()).unwrap();
    assert_eq!(old["title"], "old", "the snapshot's state");
    // The next pull brings exactly what changed meanwhile, each in the right list.
    let (changes, _) = pull_ok(&app, &wm.token, body["timestamp"].as_i64());
    assert_eq!(
        changes,
        json!({"tasks": table(
            json!([{"id": fresh, "title": "fresh"}]),
            json!([{"id": last, "title": "new"}]),
            json!([]))})
    );
}

/// What the end-to-end test needs: `node` and the installed packages.
fn watermelon_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/watermelon")
}

#[test]
fn watermelondb_synchronize_converges_with_a_desktop_node() {
    let dir = watermelon_dir();
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let has_modules = dir.join("node_modules/@nozbe/watermelondb").is_dir();
    if !(has_node && has_modules) {
        assert!(
            std::env::var_os("STARSYNC_REQUIRE_WATERMELON").is_none(),
            "STARSYNC_REQUIRE_WATERMELON is set but node ({has_node}) or tests/watermelon/node_modules \
             ({has_modules}) is missing: run `npm ci --prefix tests/watermelon`"
        );
        eprintln!(
            "SKIPPED watermelondb end-to-end: needs `node` and `npm ci --prefix tests/watermelon`"
        );
        return;
    }
    let app = TestApp::spawn();
    let wm = app.register("WATERMELON-APPS");
    let desktop = tempfile::tempdir().unwrap();
    let init = Command::new(node_bin())
        .arg("--data-dir")
        .arg(desktop.path())
        .args([
            "--json",
            "init",
            "--server",
            &app.base,
            "--code",
            "DESKTOP",
            "--admin-token",
            ADMIN,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let out = Command::new("node")
        .arg("run.js")
        .current_dir(&dir)
        .env("STARSYNC_URL", &app.base)
        .env("STARSYNC_WM_TOKEN", &wm.token)
        .env("STARSYNC_NODE_BIN", node_bin())
        .env("STARSYNC_DESKTOP", desktop.path())
        .env("STARSYNC_WM_IDS", "native")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "WatermelonDB end-to-end failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn scopes_limit_what_an_app_pulls_and_pushes() {
    let app = TestApp::spawn_with("[scopes]\nfield = \"tenant_id\"\n", &[]);
    let reg = |code: &str, scope: &str| {
        let (s, b) = app.post(
            "/api/sync/register",
            Some(ADMIN),
            &json!({"code": code, "scopes": [scope]}),
        );
        assert_eq!(s, 201, "{b}");
        b["auth_token"].as_str().unwrap().to_string()
    };
    let wm = reg("APP-7", "family-7");
    let mut other = app.register_with("DESK-8", json!({"scopes": ["family-8"]}));
    let (s, b) = app.put(
        "/api/sync/entities/tasks/theirs",
        Some(ADMIN),
        &json!({"data": {"title": "family 8", "tenant_id": "family-8"}}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = app.put(
        "/api/sync/entities/tasks/ours",
        Some(ADMIN),
        &json!({"data": {"title": "family 7", "tenant_id": "family-7"}}),
    );
    assert_eq!(s, 200, "{b}");
    let (changes, t) = pull_ok(&app, &wm, None);
    assert_eq!(ids(&changes["tasks"]["created"]), vec!["ours".to_string()]);

    // Another tenant's entity changes after the pull: the push that names it is not told so
    // (no 409): the record is refused, the rest applied, the missing scope stamped.
    app.put(
        "/api/sync/entities/tasks/theirs",
        Some(ADMIN),
        &json!({"data": {"title": "family 8 again", "tenant_id": "family-8"}}),
    );
    let (s, body) = push(
        &app,
        Some(&wm),
        json!({"tasks": table(
            json!([{"id": "mine", "title": "no scope named"},
                   {"id": "elsewhere", "title": "x", "tenant_id": "family-8"}]),
            json!([{"id": "theirs", "title": "hijack", "tenant_id": "family-7"}]),
            json!([]))}),
        t,
    );
    assert_eq!(s, 200, "{body}");
    let mut refused: Vec<String> = body["experimentalRejectedIds"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    refused.sort();
    assert_eq!(refused, vec!["elsewhere".to_string(), "theirs".to_string()]);
    assert_eq!(
        app.entity("tasks", "theirs").1["data"]["title"],
        "family 8 again"
    );
    assert_eq!(app.entity("tasks", "elsewhere").0, 404);
    assert_eq!(
        app.entity("tasks", "mine").1["data"],
        json!({"title": "no scope named", "tenant_id": "family-7"})
    );
    // The app gets the stamped state back; never the other tenant's changes.
    let (changes, _) = pull_ok(&app, &wm, Some(t));
    assert_eq!(
        changes,
        json!({"tasks": table(json!([]),
            json!([{"id": "mine", "title": "no scope named", "tenant_id": "family-7"}]),
            json!([]))})
    );
    // The other tenant's desktop gets its own entity, never the app's record.
    let got: Vec<Value> = other.drain(&app);
    assert!(got.iter().any(|c| c["entity_uuid"] == "theirs"));
    assert!(got.iter().all(|c| c["entity_uuid"] != "mine"));
}

/// A hub with scopes, and the admin writing a task into a scope.
fn scoped_hub() -> TestApp {
    TestApp::spawn_with("[scopes]\nfield = \"tenant_id\"\n", &[])
}

fn put_task(app: &TestApp, id: &str, title: &str, scope: &str) {
    let (s, b) = app.put(
        &format!("/api/sync/entities/tasks/{id}"),
        Some(ADMIN),
        &json!({"data": {"title": title, "tenant_id": scope}}),
    );
    assert_eq!(s, 200, "{b}");
}

fn set_scopes(app: &TestApp, node_id: &str, scopes: Value) {
    let (s, b) = app.patch(
        &format!("/api/sync/nodes/{node_id}"),
        Some(ADMIN),
        &json!({ "scopes": scopes }),
    );
    assert_eq!(s, 200, "{b}");
}

#[test]
fn an_entity_moving_scope_is_deleted_for_apps_that_lose_it_and_created_for_apps_that_gain_it() {
    let app = scoped_hub();
    let a = app.register_with("APP-A", json!({"scopes": ["fam-a"]}));
    let b = app.register_with("APP-B", json!({"scopes": ["fam-b"]}));
    put_task(&app, "moving", "in a", "fam-a");
    put_task(&app, "stays", "in a", "fam-a");
    put_task(&app, "bs", "in b", "fam-b");
    let (changes, ta) = pull_ok(&app, &a.token, None);
    assert_eq!(ids(&changes["tasks"]["created"]), vec!["moving", "stays"]);
    let (changes, tb) = pull_ok(&app, &b.token, None);
    assert_eq!(ids(&changes["tasks"]["created"]), vec!["bs"]);

    // The entity leaves fam-a for fam-b (edited twice, so it has several log entries).
    put_task(&app, "moving", "now in b", "fam-b");
    put_task(&app, "moving", "still in b", "fam-b");
    let (changes, ta2) = pull_ok(&app, &a.token, Some(ta));
    assert_eq!(
        changes,
        json!({"tasks": table(json!([]), json!([]), json!(["moving"]))}),
        "the A-only app must drop the record that left its view"
    );
    let (changes, _) = pull_ok(&app, &b.token, Some(tb));
    assert_eq!(
        changes,
        json!({"tasks": table(
            json!([{"id": "moving", "title": "still in b", "tenant_id": "fam-b"}]),
            json!([]), json!([]))}),
        "the B-only app never had it: `created`, not `updated`"
    );
    // Told once: the next pull has nothing.
    let (changes, _) = pull_ok(&app, &a.token, Some(ta2));
    assert_eq!(changes, json!({}));
}

#[test]
fn a_scope_added_by_patch_brings_its_older_entities_as_created_in_the_next_pull() {
    let app = scoped_hub();
    let a = app.register_with("APP-A", json!({"scopes": ["fam-a"]}));
    put_task(&app, "xa", "a", "fam-a");
    put_task(&app, "old-b", "b before", "fam-b");
    put_task(&app, "old-c", "c: never seen", "fam-c");
    let (changes, t) = pull_ok(&app, &a.token, None);
    assert_eq!(ids(&changes["tasks"]["created"]), vec!["xa"]);

    set_scopes(&app, &a.id, json!(["fam-a", "fam-b"]));
    put_task(&app, "new-b", "b after", "fam-b");
    put_task(&app, "xa", "a edited", "fam-a");
    let (changes, t2) = pull_ok(&app, &a.token, Some(t));
    let tasks = &changes["tasks"];
    assert_eq!(ids(&tasks["created"]), vec!["new-b", "old-b"], "{changes}");
    assert_eq!(ids(&tasks["updated"]), vec!["xa"], "{changes}");
    assert_eq!(ids(&tasks["deleted"]), Vec::<String>::new(), "{changes}");
    assert!(
        tasks["created"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": "old-b", "title": "b before", "tenant_id": "fam-b"})),
        "{changes}"
    );
    // Nothing comes twice.
    let (changes, _) = pull_ok(&app, &a.token, Some(t2));
    assert_eq!(changes, json!({}));
}

#[test]
fn a_scope_removed_by_patch_is_deleted_in_the_next_pull() {
    let app = scoped_hub();
    let a = app.register_with("APP-A", json!({"scopes": ["fam-a", "fam-b"]}));
    put_task(&app, "xa", "a", "fam-a");
    put_task(&app, "yb", "b", "fam-b");
    put_task(&app, "zb", "b too", "fam-b");
    let (changes, t) = pull_ok(&app, &a.token, None);
    assert_eq!(ids(&changes["tasks"]["created"]), vec!["xa", "yb", "zb"]);

    // zb is edited after the pull and the app pushes a record of its own into fam-b, then the
    // scope goes: all three must go (and nothing of fam-a).
    put_task(&app, "zb", "b edited", "fam-b");
    let (s, body) = push(
        &app,
        Some(&a.token),
        json!({"tasks": table(json!([{"id": "mine-b", "title": "pushed", "tenant_id": "fam-b"}]),
                              json!([]), json!([]))}),
        t,
    );
    assert_eq!(s, 200, "{body}");
    set_scopes(&app, &a.id, json!(["fam-a"]));
    let (changes, t2) = pull_ok(&app, &a.token, Some(t));
    assert_eq!(
        changes,
        json!({"tasks": table(json!([]), json!([]), json!(["yb", "zb", "mine-b"]))}),
        "the app must drop what its node may no longer see"
    );
    let (changes, _) = pull_ok(&app, &a.token, Some(t2));
    assert_eq!(changes, json!({}));
}

#[test]
fn gaining_and_losing_every_scope_is_followed_by_the_next_pulls() {
    let app = scoped_hub();
    let a = app.register_with("APP-A", json!({"scopes": ["fam-a"]}));
    put_task(&app, "xa", "a", "fam-a");
    put_task(&app, "yb", "b", "fam-b");
    let (changes, t) = pull_ok(&app, &a.token, None);
    assert_eq!(ids(&changes["tasks"]["created"]), vec!["xa"]);

    // `*`: the scopes the app did not see come as `created`; what it had stays `updated`.
    set_scopes(&app, &a.id, json!(["*"]));
    put_task(&app, "xa", "a edited", "fam-a");
    let (changes, t2) = pull_ok(&app, &a.token, Some(t));
    assert_eq!(
        changes,
        json!({"tasks": table(
            json!([{"id": "yb", "title": "b", "tenant_id": "fam-b"}]),
            json!([{"id": "xa", "title": "a edited", "tenant_id": "fam-a"}]),
            json!([]))})
    );
    // Back to one scope: what the app may no longer see goes.
    set_scopes(&app, &a.id, json!(["fam-a"]));
    let (changes, t3) = pull_ok(&app, &a.token, Some(t2));
    assert_eq!(
        changes,
        json!({"tasks": table(json!([]), json!([]), json!(["yb"]))})
    );
    let (changes, _) = pull_ok(&app, &a.token, Some(t3));
    assert_eq!(changes, json!({}));
}
