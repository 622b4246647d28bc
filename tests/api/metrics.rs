//! `GET /metrics` (PROTOCOL §9): the Prometheus text format, read with a real Prometheus text
//! parser (`prometheus-parse`), whose figures move with what the hub really did — exchanges by
//! outcome, changes applied, conflicts by strategy and winner, rejections by reason, nodes,
//! pending queues — and its guard: the admin token, or none with `STARSYNC_METRICS_OPEN=true`.
use crate::helpers::*;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::{json, Value};

/// `GET /metrics`: (status, content type, body).
fn get_metrics(app: &TestApp, token: Option<&str>) -> (u16, String, String) {
    let mut req = ureq::get(&app.url("/metrics"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET /metrics: {e}"),
    };
    let status = resp.status();
    let content_type = resp.header("Content-Type").unwrap_or_default().to_string();
    (status, content_type, resp.into_string().unwrap())
}

/// A successful scrape, parsed.
fn scrape(app: &TestApp, token: Option<&str>) -> Scrape {
    let (status, content_type, body) = get_metrics(app, token);
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert!(scrape.samples.len() > 10, "{body}");
    scrape
}

/// The value of the sample `metric` whose labels include `labels`; None when there is none.
fn find(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))?;
    Some(match &sample.value {
        Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
        // A histogram's count: its +Inf bucket.
        Sample::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .unwrap(),
        Sample::Summary(_) => panic!("{metric} is a summary"),
    })
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    find(scrape, metric, labels)
        .unwrap_or_else(|| panic!("no sample {metric}{labels:?} in {:#?}", scrape.samples))
}

#[test]
fn metrics_count_exchanges_changes_conflicts_rejections_nodes_and_queues() {
    // `Note` is server-only: a node's change to it is rejected (reason `immutable_type`).
    let app = TestApp::spawn_with("[conflicts.types.Note]\nimmutable = true\n", &[]);
    let mut a = app.register("METRICS-A");
    let mut b = app.register("METRICS-B");
    let task = new_uuid();
    assert_eq!(
        a.sync(&app, vec![upsert("Task", &task, 0, json!({"t": 1}))])
            .status,
        200
    );
    b.drain(&app);
    assert_eq!(b.version_of("Task", &task), 1);
    assert_eq!(
        a.sync(&app, vec![upsert("Task", &task, 1, json!({"t": 2}))])
            .status,
        200
    );
    // B writes from version 1, which the server has moved past: a conflict (server_wins, the
    // default, keeps the server's state), plus two changes rejected one by one.
    let packet = b.packet(
        b.next_packet_no,
        b.acked,
        vec![
            upsert("Task", &task, 1, json!({"t": "b"})),
            upsert("Note", &new_uuid(), 0, json!({"n": 1})),
            upsert("Task", "not an id!", 0, json!({"t": 3})),
        ],
    );
    let ex = b.post_packet(&app, &packet);
    assert_eq!(ex.status, 200, "{}", ex.body);
    assert_eq!(
        (
            ex.body["conflict_count"].as_u64(),
            ex.body["error_count"].as_u64()
        ),
        (Some(1), Some(2)),
        "{}",
        ex.body
    );
    // The same packet again: a duplicate, whose changes are not counted twice.
    let again = b.post_packet(&app, &packet);
    assert_eq!(again.body["duplicate"], true, "{}", again.body);
    // Refused exchanges, counted by error code.
    let gap = a.packet(99, a.acked, vec![]);
    assert_eq!(a.post_packet(&app, &gap).status, 409);
    let (status, _) = app.post(
        "/api/sync/exchange",
        Some(ADMIN),
        &json!({"packet_data": encode(&gap)}),
    );
    assert_eq!(status, 401);
    // A disabled node; it still has the task pending.
    let c = app.register("METRICS-C");
    let (status, body) = app.post(
        &format!("/api/sync/nodes/{}/disable", c.id),
        Some(ADMIN),
        &json!({}),
    );
    assert_eq!(status, 200, "{body}");

    let after = scrape(&app, Some(ADMIN));
    let exchanges = |outcome| value(&after, "starsync_exchanges_total", &[("outcome", outcome)]);
    // A: insert, update; B: drain, the conflicting packet.
    assert_eq!(exchanges("applied"), 4.0);
    assert_eq!(exchanges("duplicate"), 1.0);
    assert_eq!(exchanges("packet_gap"), 1.0);
    assert_eq!(exchanges("unauthorized"), 1.0);
    // Every answered exchange is timed; refused ones are not.
    assert_eq!(
        value(&after, "starsync_exchange_duration_seconds", &[]),
        5.0
    );
    // Insert, update, and the conflicting update (applied as the conflict rule decided).
    assert_eq!(value(&after, "starsync_changes_applied_total", &[]), 3.0);
    assert_eq!(
        value(
            &after,
            "starsync_conflicts_total",
            &[("strategy", "server_wins"), ("winner", "server")]
        ),
        1.0
    );
    for reason in ["immutable_type", "invalid_entity_uuid"] {
        assert_eq!(
            value(
                &after,
                "starsync_changes_rejected_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        find(
            &after,
            "starsync_changes_rejected_total",
            &[("reason", "unlisted")]
        ),
        None
    );

    // Nodes and queues agree with the admin API.
    let (status, list) = app.get("/api/sync/nodes", Some(ADMIN));
    assert_eq!(status, 200, "{list}");
    let nodes = list["nodes"].as_array().unwrap_or_else(|| panic!("{list}"));
    let active = nodes.iter().filter(|n| n["active"] == true).count() as f64;
    assert_eq!(
        value(&after, "starsync_nodes", &[("state", "active")]),
        active
    );
    assert_eq!(
        value(&after, "starsync_nodes", &[("state", "disabled")]),
        1.0
    );
    let (status, stats) = app.get("/api/sync/status", Some(ADMIN));
    assert_eq!(status, 200, "{stats}");
    let pending: Vec<f64> = stats["pending_counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["pending_changes"].as_f64().unwrap())
        .collect();
    let total: f64 = pending.iter().sum();
    assert!(
        total >= 2.0,
        "C has the task, B the state it lost to: {stats}"
    );
    assert_eq!(value(&after, "starsync_pending_changes", &[]), total);
    assert_eq!(
        value(&after, "starsync_pending_changes_max_per_node", &[]),
        pending.iter().cloned().fold(0.0, f64::max)
    );

    // The pool: the writer keeps its connection, nothing waits at rest.
    let in_use = value(
        &after,
        "starsync_db_pool_connections",
        &[("state", "in_use")],
    );
    let idle = value(&after, "starsync_db_pool_connections", &[("state", "idle")]);
    let max = value(&after, "starsync_db_pool_max_connections", &[]);
    assert!(
        in_use >= 1.0 && in_use + idle <= max,
        "{in_use} {idle} {max}"
    );
    assert_eq!(value(&after, "starsync_writers_waiting", &[]), 0.0);

    // Node and queue figures are computed at most every 5 s (they scan the change log);
    // counters are always current.
    let scraped = std::time::Instant::now();
    app.register("METRICS-D");
    a.sync(&app, vec![]);
    let cached = scrape(&app, Some(ADMIN));
    if scraped.elapsed() < std::time::Duration::from_secs(4) {
        assert_eq!(
            value(&cached, "starsync_nodes", &[("state", "active")]),
            active
        );
    }
    assert_eq!(
        value(
            &cached,
            "starsync_exchanges_total",
            &[("outcome", "applied")]
        ),
        5.0
    );
    std::thread::sleep(starsync::metrics::HUB_GAUGES_TTL);
    let fresh = scrape(&app, Some(ADMIN));
    assert_eq!(
        value(&fresh, "starsync_nodes", &[("state", "active")]),
        active + 1.0
    );
}

#[test]
fn metrics_need_the_admin_token_unless_opened() {
    let app = TestApp::spawn();
    let node = app.register("METRICS-AUTH");
    let expect_error = |token: Option<&str>, status: u16, code: &str| {
        let (got, _, body) = get_metrics(&app, token);
        assert_eq!(got, status, "{token:?}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    expect_error(None, 401, "unauthorized");
    expect_error(Some("not-the-admin-token"), 401, "unauthorized");
    expect_error(Some(&node.token), 403, "forbidden");

    // A fresh hub: every series there from the start, at zero, and the build.
    let s = scrape(&app, Some(ADMIN));
    for outcome in ["applied", "duplicate"] {
        assert_eq!(
            value(&s, "starsync_exchanges_total", &[("outcome", outcome)]),
            0.0
        );
    }
    assert_eq!(value(&s, "starsync_changes_applied_total", &[]), 0.0);
    assert_eq!(value(&s, "starsync_exchange_duration_seconds", &[]), 0.0);
    assert_eq!(value(&s, "starsync_nodes", &[("state", "active")]), 1.0);
    assert_eq!(value(&s, "starsync_nodes", &[("state", "disabled")]), 0.0);
    assert_eq!(value(&s, "starsync_pending_changes", &[]), 0.0);
    assert_eq!(value(&s, "starsync_event_streams_open", &[]), 0.0);
    let backend = if std::env::var_os(BACKEND_ENV).is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        value(
            &s,
            "starsync_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("backend", backend)]
        ),
        1.0
    );

    let open = TestApp::spawn_with("", &[("STARSYNC_METRICS_OPEN", "true")]);
    let s = scrape(&open, None);
    assert_eq!(
        value(&s, "starsync_exchanges_total", &[("outcome", "applied")]),
        0.0
    );
    // The same with the configuration key.
    let open = TestApp::spawn_with("[server]\nmetrics_open = true\n", &[]);
    scrape(&open, None);
}
