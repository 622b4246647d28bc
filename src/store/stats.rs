//! PostgreSQL planner statistics for a log that grows fast.
//!
//! Keyed reads of `entities` (`entity_type = $1 AND entity_uuid = ANY($2)`: a packet's rows,
//! an ingest's preload) can use the primary key or `(entity_type, seq)`; both start with the
//! type. Before PostgreSQL has statistics on the table (right after a bulk load, until
//! autovacuum's first ANALYZE a minute or more later) the planner believes a type matches a
//! few rows and picks `(entity_type, seq)`, then filters *every* row of the type: one tenant's
//! initial sync on a hub of 100,000 entities took ten times as long as on a hub holding that
//! tenant alone (docs/performance.md, "Planner statistics"). With statistics the primary key
//! wins at once.
//!
//! So the hub runs `ANALYZE entities` itself each time its log has doubled since the last
//! run (from 1,000 changes on): a handful of runs while a hub fills up, none once it is large
//! (autovacuum keeps statistics fresh from then on, as its thresholds are relative). It runs
//! on its own thread and connection, never inside a write, and a failed run is retried at the
//! next doubling: nothing depends on it but query plans. SQLite needs none of this (its
//! planner prefers the primary key without statistics).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use super::StoreResult;

/// The first run, in changes of the log: below this a sequential scan costs nothing.
pub const FIRST_RUN_AT: i64 = 1000;

/// Starts the statistics thread for a PostgreSQL URL; `None` for SQLite. Stops when dropped.
pub struct StatsRefresher {
    /// Log position at which the next run is due; `i64::MAX` while one is queued or running.
    next_due: Arc<AtomicI64>,
    tx: Option<mpsc::Sender<i64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatsRefresher {
    pub fn spawn(url: &str) -> StoreResult<Option<StatsRefresher>> {
        #[cfg(feature = "postgres")]
        if let super::DbUrl::Postgres(url) = super::DbUrl::parse(url)? {
            let next_due = Arc::new(AtomicI64::new(FIRST_RUN_AT));
            let due = next_due.clone();
            let (tx, rx) = mpsc::channel::<i64>();
            let thread = std::thread::Builder::new()
                .name("starsync-analyze".into())
                .spawn(move || {
                    // Ends when the sender is dropped (the engine stops).
                    while let Ok(seq) = rx.recv() {
                        if let Err(e) = analyze(&url) {
                            tracing::warn!(error = %e, "ANALYZE entities failed; tried again when the log has doubled");
                        } else {
                            tracing::debug!(log_seq = seq, "planner statistics refreshed");
                        }
                        due.store(seq.saturating_mul(2).max(FIRST_RUN_AT), Ordering::Relaxed);
                    }
                })
                .map_err(|e| {
                    super::StoreError::Url(format!("cannot start the statistics thread: {e}"))
                })?;
            return Ok(Some(StatsRefresher {
                next_due,
                tx: Some(tx),
                thread: Some(thread),
            }));
        }
        let _ = url;
        Ok(None)
    }

    /// Told the log position after every commit that wrote changes: one atomic load, and a
    /// message to the thread when a run is due.
    pub fn note(&self, last_seq: i64) {
        let due = self.next_due.load(Ordering::Relaxed);
        if last_seq < due {
            return;
        }
        // One claim per run: whoever swaps the due position queues it.
        if self
            .next_due
            .compare_exchange(due, i64::MAX, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            if let Some(tx) = &self.tx {
                let _ = tx.send(last_seq);
            }
        }
    }
}

#[cfg(feature = "postgres")]
fn analyze(url: &str) -> StoreResult<()> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::PgConnection::establish(url)
        .map_err(|e| super::StoreError::Url(format!("statistics thread cannot connect: {e}")))?;
    conn.batch_execute("ANALYZE entities")?;
    Ok(())
}

impl Drop for StatsRefresher {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
