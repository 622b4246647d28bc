//! The change feed, `GET /api/sync/changes` (PROTOCOL §11.3), and the time cursors of §11:
//! pages, cursors (numbers and handed-out times), arbitrary instants, scopes, a reader paging
//! while a writer writes.

use std::collections::{BTreeMap, HashSet};

use crate::helpers::*;
use crate::scopes::{admin_put, node_with, scoped_app};
use serde_json::{json, Value};

fn feed(app: &TestApp, token: &str, query: &str) -> Value {
    let (s, body) = app.get(&format!("/api/sync/changes{query}"), Some(token));
    assert_eq!(s, 200, "{query}: {body}");
    body
}

/// `(type, id)` of every record of a page.
fn records(page: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (t, list) in page["entities"].as_object().unwrap() {
        for r in list.as_array().unwrap() {
            out.push((t.clone(), r["id"].as_str().unwrap().to_string()));
        }
    }
    out.sort();
    out
}

fn deleted(page: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (t, list) in page["deleted"].as_object().unwrap() {
        for id in list.as_array().unwrap() {
            out.push((t.clone(), id.as_str().unwrap().to_string()));
        }
    }
    out.sort();
    out
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn key(t: &str, id: &str) -> (String, String) {
    (t.to_string(), id.to_string())
}

#[test]
fn without_since_every_live_entity_then_changes_since_the_cursor() {
    let app = TestApp::spawn();
    let mut desk = app.register("DESK");
    let reader = app.register("FEED");
    let (a, b, gone) = (new_uuid(), "task-1".to_string(), new_uuid());
    desk.sync(
        &app,
        vec![
            upsert("Task", &a, 0, json!({"title": "a", "n": 1.50})),
            upsert("Task", &b, 0, json!({"title": "b"})),
            upsert("Project", &gone, 0, json!({"name": "x"})),
        ],
    );
    desk.sync(&app, vec![delete("Project", &gone, 1)]);

    let first = feed(&app, &reader.token, "");
    assert_eq!(first["since"], Value::Null);
    assert_eq!(first["has_more"], json!(false));
    assert_eq!(
        records(&first),
        sorted(vec![key("Task", &a), key("Task", &b)])
    );
    assert_eq!(first["deleted"], json!({}), "no deletions without since");
    let rec = first["entities"]["Task"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(a))
        .unwrap()
        .clone();
    assert_eq!(rec["title"], json!("a"));
    assert_eq!(rec["version"], json!(1));
    assert!(rec["updated_at"].is_string(), "{rec}");
    // Numbers keep their text (1.50).
    let (_, raw) = app.get("/api/sync/changes", Some(&reader.token));
    assert!(raw.to_string().contains("title"));
    let cursor = first["cursor"].as_i64().expect("a numeric cursor");
    let time = first["updatedAt"]
        .as_str()
        .expect("an ISO time")
        .to_string();
    assert!(cursor >= 1);

    // Nothing new: an empty page, the same point of the log.
    let same = feed(&app, &reader.token, &format!("?since={cursor}"));
    assert_eq!(records(&same), vec![]);
    assert_eq!(deleted(&same), vec![]);
    assert_eq!(same["cursor"].as_i64(), Some(cursor));
    assert_eq!(
        same["updatedAt"].as_str(),
        Some(time.as_str()),
        "one time per point"
    );
    assert_eq!(
        same["since"],
        json!(cursor),
        "a number is echoed as a number"
    );

    desk.sync(
        &app,
        vec![
            upsert("Task", &a, 1, json!({"title": "a2"})),
            delete("Task", &b, 1),
        ],
    );
    for since in [cursor.to_string(), time.clone()] {
        let page = feed(&app, &reader.token, &format!("?since={since}"));
        assert_eq!(records(&page), vec![key("Task", &a)], "{since}");
        assert_eq!(deleted(&page), vec![key("Task", &b)], "{since}");
        assert_eq!(page["entities"]["Task"][0]["version"], json!(2));
        assert!(page["cursor"].as_i64().unwrap() > cursor);
        assert!(
            page["updatedAt"].as_str().unwrap() > time.as_str(),
            "times grow"
        );
    }
    // Types asked for.
    let only = feed(&app, &reader.token, "?types=Project");
    assert_eq!(records(&only), vec![]);
    let tasks = feed(&app, &reader.token, "?types=Task,Project");
    assert_eq!(records(&tasks), vec![key("Task", &a)]);
}

#[test]
fn pages_of_a_small_limit_say_has_more_and_continue() {
    let app = TestApp::spawn();
    let mut desk = app.register("DESK");
    let reader = app.register("FEED");
    let ids: Vec<String> = (0..7).map(|_| new_uuid()).collect();
    desk.sync(
        &app,
        ids.iter()
            .map(|u| upsert("Item", u, 0, json!({"v": 1})))
            .collect(),
    );
    let mut seen = Vec::new();
    let mut since = String::new();
    let mut pages = 0;
    loop {
        let page = feed(&app, &reader.token, &format!("?limit=3{since}"));
        pages += 1;
        let got = records(&page);
        assert!(got.len() <= 3);
        seen.extend(got.clone());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        assert_eq!(got.len(), 3, "a page with more after it is full");
        since = format!("&since={}", page["updatedAt"].as_str().unwrap());
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let want: Vec<_> = ids.iter().map(|u| key("Item", u)).collect();
    assert_eq!(sorted(seen), sorted(want));
}

#[test]
fn a_reader_paging_while_a_writer_writes_skips_nothing_and_repeats_nothing() {
    let app = TestApp::spawn();
    let reader = app.register("FEED");
    let desk = app.register("DESK");
    let ids: Vec<String> = (0..12).map(|_| new_uuid()).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let ids = ids.clone();
        let done = done.clone();
        let base = app.base.clone();
        let mut desk = desk;
        std::thread::spawn(move || {
            for round in 0..30u64 {
                let changes = ids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !(*i as u64 + round).is_multiple_of(3))
                    .map(|(_, u)| {
                        let base_v = desk.version_of("Item", u);
                        upsert("Item", u, base_v, json!({"round": round}))
                    })
                    .collect();
                desk.sync_at(&base, changes);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    let mut since: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
        let q = match &since {
            Some(s) => format!("?limit=5&since={s}"),
            None => "?limit=5".to_string(),
        };
        let page = feed(&app, &reader.token, &q);
        for r in page["entities"]["Item"].as_array().into_iter().flatten() {
            let id = r["id"].as_str().unwrap().to_string();
            let v = r["version"].as_i64().unwrap();
            assert!(
                seen.insert((id.clone(), v)),
                "({id}, {v}) was read twice: {page}"
            );
            let before = latest.insert(id.clone(), v);
            assert!(before.is_none_or(|b| b < v), "{id}: versions go forward");
        }
        since = Some(page["updatedAt"].as_str().unwrap().to_string());
        if finished && !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    writer.join().unwrap();
    assert!(
        pages > 3,
        "the reader read while the writer wrote ({pages} pages)"
    );
    // The server's final log: every entity's last version was read.
    for u in &ids {
        let (s, e) = app.entity("Item", u);
        assert_eq!(s, 200);
        assert_eq!(
            latest.get(u).copied(),
            e["version"].as_i64(),
            "{u}: the last version was read"
        );
    }
}

#[test]
fn a_handed_out_time_is_exact_and_any_other_instant_means_committed_after_it() {
    let app = TestApp::spawn();
    let mut desk = app.register("DESK");
    let reader = app.register("FEED");
    let (a, b) = (new_uuid(), new_uuid());
    desk.sync(&app, vec![upsert("Note", &a, 0, json!({"t": "a"}))]);
    let first = feed(&app, &reader.token, "");
    let t1 = first["updatedAt"].as_str().unwrap().to_string();
    desk.sync(&app, vec![upsert("Note", &b, 0, json!({"t": "b"}))]);

    // Handed out: exactly the changes after it.
    let exact = feed(&app, &reader.token, &format!("?since={t1}"));
    assert_eq!(records(&exact), vec![key("Note", &b)]);
    // Never handed out, a moment before everything: every change after it.
    let early = feed(&app, &reader.token, "?since=2000-01-01T00:00:00Z");
    assert_eq!(
        records(&early),
        sorted(vec![key("Note", &a), key("Note", &b)])
    );
    // Never handed out, the same instant written with another offset and fewer digits: still
    // nothing committed after it is skipped (changes just before it may come again).
    let other = t1.replace('Z', "+00:00");
    let arbitrary = feed(
        &app,
        &reader.token,
        &format!("?since={}", other.replace('+', "%2B")),
    );
    assert!(
        records(&arbitrary).contains(&key("Note", &b)),
        "{arbitrary}"
    );
    let truncated = format!("{}Z", &t1[..19]);
    let page = feed(&app, &reader.token, &format!("?since={truncated}"));
    assert!(records(&page).contains(&key("Note", &b)), "{page}");
    // An instant in the future: nothing.
    let later = feed(&app, &reader.token, "?since=2100-01-01T00:00:00Z");
    assert_eq!(records(&later), vec![]);
    assert_eq!(later["since"], json!("2100-01-01T00:00:00Z"));
}

#[test]
fn cursors_survive_a_restart_and_keep_growing() {
    let app = TestApp::spawn();
    let mut desk = app.register("DESK");
    let reader = app.register("FEED");
    let a = new_uuid();
    desk.sync(&app, vec![upsert("Note", &a, 0, json!({"t": "a"}))]);
    let first = feed(&app, &reader.token, "");
    let (t1, c1) = (
        first["updatedAt"].as_str().unwrap().to_string(),
        first["cursor"].as_i64().unwrap(),
    );
    let app = app.restart();
    let b = new_uuid();
    desk.sync(&app, vec![upsert("Note", &b, 0, json!({"t": "b"}))]);
    let page = feed(&app, &reader.token, &format!("?since={t1}"));
    assert_eq!(records(&page), vec![key("Note", &b)]);
    assert!(page["cursor"].as_i64().unwrap() > c1);
    assert!(page["updatedAt"].as_str().unwrap() > t1.as_str());
}

#[test]
fn a_scoped_node_sees_only_its_tenant_and_is_told_when_an_entity_leaves() {
    let app = scoped_app();
    let one = node_with(&app, "ONE", &["t1"], None);
    let two = node_with(&app, "TWO", &["t2"], None);
    let (x, y, z) = (new_uuid(), new_uuid(), new_uuid());
    admin_put(&app, "Task", &x, json!({"tenant_id": "t1", "title": "x"}));
    admin_put(&app, "Task", &y, json!({"tenant_id": "t2", "title": "y"}));
    admin_put(&app, "Country", &z, json!({"name": "FR"}));

    let p1 = feed(&app, &one.token, "");
    assert_eq!(
        records(&p1),
        sorted(vec![key("Country", &z), key("Task", &x)])
    );
    let p2 = feed(&app, &two.token, "");
    assert_eq!(
        records(&p2),
        sorted(vec![key("Country", &z), key("Task", &y)])
    );

    // x moves from t1 to t2; y changes in t2.
    admin_put(
        &app,
        "Task",
        &x,
        json!({"tenant_id": "t2", "title": "x moved"}),
    );
    admin_put(&app, "Task", &y, json!({"tenant_id": "t2", "title": "y2"}));
    let c1 = p1["cursor"].as_i64().unwrap();
    let n1 = feed(&app, &one.token, &format!("?since={c1}"));
    assert_eq!(records(&n1), vec![], "nothing of t2: {n1}");
    assert_eq!(deleted(&n1), vec![key("Task", &x)], "x left ONE's view");
    assert!(!n1.to_string().contains("moved") && !n1.to_string().contains(&y));
    let c2 = p2["updatedAt"].as_str().unwrap();
    let n2 = feed(&app, &two.token, &format!("?since={c2}"));
    assert_eq!(records(&n2), sorted(vec![key("Task", &x), key("Task", &y)]));
    assert_eq!(deleted(&n2), vec![]);
    // An instant before everything: still nothing of another tenant.
    let all = feed(&app, &one.token, "?since=2000-01-01T00:00:00Z");
    assert_eq!(records(&all), vec![key("Country", &z)]);
    assert_eq!(deleted(&all), vec![key("Task", &x)]);
}

#[test]
fn bad_parameters_and_tokens_are_refused() {
    let app = TestApp::spawn();
    let reader = app.register("FEED");
    for q in [
        "?since=abc",
        "?since=0",
        "?since=-3",
        "?since=9007199254740992",
        "?since=999999",
        "?limit=0",
        "?limit=10001",
        "?limit=x",
        "?types=1bad",
    ] {
        let (s, body) = app.get(&format!("/api/sync/changes{q}"), Some(&reader.token));
        assert_eq!(s, 422, "{q}: {body}");
        assert_eq!(body["error"], json!("invalid_request"), "{q}");
    }
    let (s, body) = app.get("/api/sync/changes?limit=10000", Some(&reader.token));
    assert_eq!(s, 200, "{body}");
    let (s, body) = app.get("/api/sync/changes", Some(ADMIN));
    assert_eq!(s, 401, "the admin token is not a node: {body}");
    assert_eq!(body["error"], json!("unauthorized"));
    let (s, _) = app.get("/api/sync/changes", None);
    assert_eq!(s, 401);
}

fn get_from(base: &str, path: &str, token: &str) -> Value {
    let resp = ureq::get(&format!("{base}{path}"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    resp.into_json().unwrap()
}

#[test]
fn several_processes_hand_out_times_that_grow_with_the_log() {
    let app = TestApp::spawn();
    let other = ServerProcess::spawn(&app);
    let bases = vec![app.base.clone(), other.base.clone()];
    let reader = app.register("FEED");
    let mut desk = app.register("DESK");
    let ids: Vec<String> = (0..6).map(|_| new_uuid()).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (ids, done, bases) = (ids.clone(), done.clone(), bases.clone());
        std::thread::spawn(move || {
            for round in 0..20u64 {
                let changes = ids
                    .iter()
                    .map(|u| upsert("Item", u, desk.version_of("Item", u), json!({"r": round})))
                    .collect();
                desk.sync_at(&bases[round as usize % 2], changes);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    // Two readers, each alternating between the processes, pages of 4.
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (bases, token, done) = (bases.clone(), reader.token.clone(), done.clone());
            std::thread::spawn(move || {
                let mut handed = Vec::new();
                let mut seen = HashSet::new();
                let mut since: Option<String> = None;
                for i in 0.. {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let q = match &since {
                        Some(s) => format!("/api/sync/changes?limit=4&since={s}"),
                        None => "/api/sync/changes?limit=4".to_string(),
                    };
                    let page = get_from(&bases[(i + r) % 2], &q, &token);
                    for rec in page["entities"]["Item"].as_array().into_iter().flatten() {
                        let pair = (
                            rec["id"].as_str().unwrap().to_string(),
                            rec["version"].as_i64().unwrap(),
                        );
                        assert!(seen.insert(pair.clone()), "{pair:?} read twice");
                    }
                    let time = page["updatedAt"].as_str().unwrap().to_string();
                    handed.push((page["cursor"].as_i64().unwrap(), time.clone()));
                    since = Some(time);
                    if finished && !page["has_more"].as_bool().unwrap() {
                        break;
                    }
                }
                (handed, seen)
            })
        })
        .collect();
    writer.join().unwrap();
    let mut all = Vec::new();
    for h in readers {
        let (handed, seen) = h.join().unwrap();
        for u in &ids {
            let (_, e) = app.entity("Item", u);
            let last = e["version"].as_i64().unwrap();
            assert!(seen.contains(&(u.clone(), last)), "{u} v{last} was read");
        }
        // Each reader's cursors never decrease.
        assert!(handed.windows(2).all(|w| w[0].0 <= w[1].0), "{handed:?}");
        all.extend(handed);
    }
    // Across readers and processes: one time per point, and times grow with points.
    all.sort();
    for w in all.windows(2) {
        let ((c1, t1), (c2, t2)) = (&w[0], &w[1]);
        if c1 == c2 {
            assert_eq!(t1, t2, "one time per point");
        } else {
            assert!(t1 < t2, "{c1} {t1} / {c2} {t2}");
        }
    }
}
