//! PostgreSQL: the hub refreshes the planner's statistics while its log fills up, so keyed
//! reads of `entities` (a packet's rows, an ingest's preload) use the primary key at once
//! instead of filtering every row of the type until autovacuum's first ANALYZE
//! (src/store/stats.rs).

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};

use crate::helpers::*;

#[derive(diesel::QueryableByName)]
struct Analyzed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    analyzed: bool,
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

#[test]
fn a_filling_log_gets_planner_statistics_before_autovacuum_would() {
    let app = TestApp::spawn();
    let db = app.db.as_ref().unwrap();
    if !db.is_postgres() {
        eprintln!("skipped: planner statistics are a PostgreSQL matter");
        return;
    }
    let mut pg = diesel::PgConnection::establish(&db.url(&app.path())).unwrap();
    // Autovacuum off for the table: whatever analyzes it now is the hub.
    pg.batch_execute("ALTER TABLE entities SET (autovacuum_enabled = false)")
        .unwrap();
    let mut node = app.register("FILLER");
    let mut ids = Vec::new();
    for _ in 0..12 {
        let changes: Vec<_> = (0..100)
            .map(|i| {
                let id = new_uuid();
                ids.push(id.clone());
                upsert("Task", &id, 0, serde_json::json!({"i": i, "title": "x"}))
            })
            .collect();
        let ex = node.sync(&app, changes);
        assert_eq!(ex.body["processed_count"], 100, "{}", ex.body);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<Analyzed> = diesel::sql_query(
            "SELECT last_analyze IS NOT NULL AS analyzed FROM pg_stat_user_tables \
             WHERE relname = 'entities'",
        )
        .load(&mut pg)
        .unwrap();
        if rows.first().is_some_and(|r| r.analyzed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "1,200 changes in, and the hub has not run ANALYZE on entities"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // With statistics the planner knows every row has this type: a keyed read of 100
    // entities never walks the (entity_type, seq) index filtering the whole type (at this
    // size a sequential scan is cheapest; on a large table, the primary key).
    let list = ids[..100]
        .iter()
        .map(|u| format!("'{u}'"))
        .collect::<Vec<_>>()
        .join(",");
    let plan: Vec<PlanLine> = diesel::sql_query(format!(
        "EXPLAIN SELECT * FROM entities WHERE entity_type = 'Task' \
         AND entity_uuid = ANY(ARRAY[{list}])"
    ))
    .load(&mut pg)
    .unwrap();
    let text: Vec<&str> = plan.iter().map(|l| l.line.as_str()).collect();
    assert!(
        !text.iter().any(|l| l.contains("entities_type_seq")),
        "keyed read filters the whole type through (entity_type, seq):\n{}",
        text.join("\n")
    );
}
