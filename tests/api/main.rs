//! The server's black-box tests, one binary (each test file used to link the whole server on
//! its own): a real server on port 0 with its own database, driven over HTTP, plus the
//! `starsync` and `starsync-node` programs run as processes and the node library embedded.
//!
//! Backends: SQLite by default; `STARSYNC_TEST_DATABASE_URL=postgres://…` runs every test on
//! PostgreSQL. `TEST_LOG=1` prints the servers' logs (shown for failing tests).
#![allow(clippy::unwrap_used)]

mod helpers;

mod change_feed;
mod cli_offline;
mod commit_order;
mod config_errors;
mod conflicts;
mod cross_protocol;
mod dashboard;
mod delivery;
mod delta;
mod entity_ids;
mod entity_listing;
mod events;
mod group_commit;
mod hostile;
mod http_errors;
mod idempotency;
mod json_logs;
mod limits;
mod metrics;
mod multiprocess;
mod node_cli;
mod node_e2e;
mod node_faults;
mod node_offline;
mod openapi;
mod pending_counts;
mod planner_stats;
mod rest_entities;
mod scopes;
mod simple_push;
mod slow_bodies;
mod smoke;
mod startup;
mod tls;
mod watermelon;
