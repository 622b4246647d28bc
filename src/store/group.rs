//! Group commit: the hub's single writer applies several concurrent writes in one database
//! transaction, each in its own savepoint (the first needs none), and commits them together.
//!
//! Why: every exchange — even an empty one — is a write (it uses up packet numbers), and one
//! commit per write made the commit the bound: on PostgreSQL one fsync per exchange (375 idle
//! exchanges/s at saturation). Writers that arrive while another one works now share its
//! commit. The single-writer argument of docs/design.md is kept: one transaction at a time
//! holds the writer lock, so sequence order is still commit order.
//!
//! How (a baton passed between the writing threads, no thread of its own): a writer announces
//! itself (`queued`), takes the state mutex, opens the transaction when none is open (its
//! first statement takes the hub's writer lock, `UPDATE server_state`), runs its work in a
//! savepoint, and then either commits — when nobody else is queued, or the batch is full or
//! old — or leaves the transaction open for the next queued writer and waits for the commit.
//! So a lone write never waits for company, and under load every commit carries what queued
//! meanwhile. Each member runs its own closure on its own thread (its borrows stay valid;
//! nothing moves to another thread but the connection).
//!
//! Failures, each member answered only once its fate is settled:
//! - a member's work fails: its savepoint is rolled back and it gets its error at once (nothing
//!   of it remains); its batch mates go on;
//! - the transaction itself is unusable afterwards (a probe statement fails: a lost
//!   connection, an aborted PostgreSQL transaction), or the commit fails: everything is rolled
//!   back and every member of the batch gets [`StoreError::Commit`] — nothing of the batch
//!   is applied, and the connection is replaced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use diesel::connection::{Connection, SimpleConnection, TransactionManager};
use parking_lot::{Condvar, Mutex};

use super::{Conn, Pool, PooledConn, StoreError, WRITER_LOCK_LOG};

/// How large a batch may grow before its commit (whichever comes first).
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Most writes sharing one commit.
    pub max_members: usize,
    /// Most time from a batch's first statement to its commit: bounds the latency a write
    /// adds to the writes before it (and so the bytes a batch can gather: a large packet
    /// takes long to apply, and the next member commits).
    pub max_open: Duration,
}

impl Default for GroupLimits {
    fn default() -> GroupLimits {
        GroupLimits {
            max_members: 64,
            max_open: Duration::from_millis(10),
        }
    }
}

/// The process's one writer: its connection and the batch open on it.
pub struct GroupWriter {
    state: Mutex<State>,
    /// Signalled when a batch's outcome is known.
    settled: Condvar,
    /// Writers that announced themselves and have not yet run: while any are, the running
    /// one leaves the transaction open for them.
    queued: AtomicUsize,
    limits: GroupLimits,
}

struct State {
    /// Kept between writes so its page cache stays warm; `None` after a failure (a fresh one
    /// from the pool next time).
    conn: Option<PooledConn>,
    batch: Option<Batch>,
}

struct Batch {
    started: Instant,
    members: usize,
    /// `Ok` once committed, `Err(message)` once rolled back.
    outcome: Arc<OnceLock<Result<(), String>>>,
}

impl GroupWriter {
    pub fn new(limits: GroupLimits) -> GroupWriter {
        GroupWriter {
            state: Mutex::new(State {
                conn: None,
                batch: None,
            }),
            settled: Condvar::new(),
            queued: AtomicUsize::new(0),
            limits,
        }
    }

    /// Runs `f` as one member of a write batch and returns its result once the batch's
    /// commit made it durable. `f` runs in a savepoint of the batch's transaction, after the
    /// batch mates before it (same connection: it sees their writes).
    pub fn write<T, E, F>(&self, pool: &Pool, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Conn) -> Result<T, E>,
        E: From<diesel::result::Error> + From<StoreError>,
    {
        self.queued.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(target: WRITER_LOCK_LOG, "queued for the writer");
        let mut st = self.state.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);

        if st.batch.is_none() {
            self.open_batch(&mut st, pool)?;
        }
        let (outcome, first) = match st.batch.as_mut() {
            Some(b) => {
                b.members += 1;
                (b.outcome.clone(), b.members == 1)
            }
            None => return Err(StoreError::Commit("no write transaction is open".into()).into()),
        };
        let Some(conn) = st.conn.as_mut() else {
            return Err(StoreError::Commit("the writer has no connection".into()).into());
        };

        // The member's savepoint (a nested transaction is a savepoint in diesel) — except for
        // the batch's first member: with nothing of others before it, rolling the whole
        // transaction back undoes exactly its work, and a lone write (the common case when
        // the hub is not saturated) saves two statements under the writer lock. A panic would
        // leave a savepoint open, and the batch's "commit" would then only release it: the
        // batch is rolled back before the panic goes on.
        let conn: &mut Conn = conn;
        let run =
            std::panic::AssertUnwindSafe(|| if first { f(conn) } else { conn.transaction(f) });
        let result = match std::panic::catch_unwind(run) {
            Ok(result) => result,
            Err(panic) => {
                self.abort_batch(&mut st, "a write panicked".into());
                std::panic::resume_unwind(panic);
            }
        };
        if first && result.is_err() {
            // Nobody joined yet (the state mutex was held): end the transaction, and the next
            // writer opens a new one.
            self.rollback_alone(&mut st);
            return result;
        }
        let Some(conn) = st.conn.as_mut() else {
            return Err(StoreError::Commit("the writer has no connection".into()).into());
        };
        if result.is_err() && conn.batch_execute("SELECT 1").is_err() {
            // The transaction cannot go on (lost connection, aborted transaction): nothing of
            // the batch can commit.
            self.abort_batch(
                &mut st,
                "the write transaction failed and was rolled back".into(),
            );
            return result;
        }

        let full = st.batch.as_ref().is_some_and(|b| {
            b.members >= self.limits.max_members || b.started.elapsed() >= self.limits.max_open
        });
        if full || self.queued.load(Ordering::SeqCst) == 0 {
            // Last of the batch: commit for everyone.
            let committed = self.commit_batch(&mut st);
            return match (result, committed) {
                (Err(own), _) => Err(own),
                (Ok(v), Ok(())) => Ok(v),
                (Ok(_), Err(e)) => Err(e.into()),
            };
        }
        // Someone queued behind: leave the transaction open for them, and answer only once
        // the batch's fate is settled.
        let value = result?;
        while outcome.get().is_none() {
            self.settled.wait(&mut st);
        }
        match outcome.get() {
            Some(Ok(())) => Ok(value),
            Some(Err(message)) => Err(StoreError::Commit(message.clone()).into()),
            None => Err(StoreError::Commit("the write batch was abandoned".into()).into()),
        }
    }

    /// Begins the transaction and takes the hub's writer lock.
    fn open_batch(&self, st: &mut State, pool: &Pool) -> Result<(), StoreError> {
        if st.conn.is_none() {
            st.conn = Some(pool.get()?);
        }
        let Some(conn) = st.conn.as_mut() else {
            return Err(StoreError::Commit("the writer has no connection".into()));
        };
        let begun = <Conn as Connection>::TransactionManager::begin_transaction(&mut **conn)
            .map_err(StoreError::from)
            .and_then(|()| {
                take_writer_lock(conn).inspect_err(|_| {
                    let _ =
                        <Conn as Connection>::TransactionManager::rollback_transaction(&mut **conn);
                })
            });
        if let Err(e) = begun {
            // The connection may be broken (database restarted): a fresh one next time.
            st.conn = None;
            return Err(e);
        }
        st.batch = Some(Batch {
            started: Instant::now(),
            members: 0,
            outcome: Arc::new(OnceLock::new()),
        });
        Ok(())
    }

    /// Commits the open batch and tells its waiting members.
    fn commit_batch(&self, st: &mut State) -> Result<(), StoreError> {
        let Some(batch) = st.batch.take() else {
            return Ok(());
        };
        let committed = match st.conn.as_mut() {
            Some(conn) => <Conn as Connection>::TransactionManager::commit_transaction(&mut **conn)
                .map_err(|e| e.to_string()),
            None => Err("the writer has no connection".to_string()),
        };
        if let Err(message) = &committed {
            tracing::error!(
                error = %message,
                members = batch.members,
                "a write batch failed to commit; every write in it fails"
            );
            if let Some(conn) = st.conn.as_mut() {
                let _ = <Conn as Connection>::TransactionManager::rollback_transaction(&mut **conn);
            }
            st.conn = None;
        }
        if committed.is_ok() {
            tracing::debug!(
                target: WRITER_LOCK_LOG,
                members = batch.members,
                "write batch committed"
            );
        }
        let _ = batch.outcome.set(committed.clone());
        self.settled.notify_all();
        committed.map_err(StoreError::Commit)
    }

    /// Rolls back a batch whose only member failed (its own error is its answer); the
    /// connection is kept unless the rollback failed too.
    fn rollback_alone(&self, st: &mut State) {
        let rolled_back = st.conn.as_mut().is_some_and(|conn| {
            <Conn as Connection>::TransactionManager::rollback_transaction(&mut **conn).is_ok()
        });
        if !rolled_back {
            st.conn = None;
        }
        if let Some(batch) = st.batch.take() {
            let _ = batch
                .outcome
                .set(Err("the write failed and was rolled back".into()));
        }
        self.settled.notify_all();
    }

    /// Rolls the open batch back and fails its waiting members with `message`.
    fn abort_batch(&self, st: &mut State, message: String) {
        if let Some(conn) = st.conn.as_mut() {
            let _ = <Conn as Connection>::TransactionManager::rollback_transaction(&mut **conn);
        }
        st.conn = None;
        if let Some(batch) = st.batch.take() {
            tracing::error!(
                members = batch.members,
                "{message}; every write in its batch fails"
            );
            let _ = batch.outcome.set(Err(message));
        }
        self.settled.notify_all();
    }
}

/// The first statement of every write transaction: the hub's writer lock (docs/design.md).
fn take_writer_lock(conn: &mut Conn) -> Result<(), StoreError> {
    use diesel::RunQueryDsl;
    // Debug lines around the lock: they show lock waits in a log, and let a test know a writer
    // is queued behind another (tests/api/commit_order.rs) on SQLite too, whose busy-wait is
    // invisible from outside.
    tracing::debug!(target: WRITER_LOCK_LOG, "waiting for the writer lock");
    let started = Instant::now();
    diesel::sql_query("UPDATE server_state SET last_seq = last_seq WHERE id = 1").execute(conn)?;
    tracing::debug!(
        target: WRITER_LOCK_LOG,
        waited_ms = started.elapsed().as_millis() as u64,
        "writer lock taken"
    );
    Ok(())
}
