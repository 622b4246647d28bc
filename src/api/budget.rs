//! Memory budgets of the exchange route: how much memory request bodies, decoded packets and
//! answers may hold at once (`server.max_inflight_bytes`). More waits its turn, asynchronously,
//! holding no thread.
//!
//! Why: 50 concurrent exchanges, each with a 16 MiB body inflating to 64 MiB, or each answered
//! with 32 MiB of other nodes' entities, would otherwise hold many GiB at once. Each stage
//! leases what it may need before it allocates, and gives back what it did not use:
//!
//! 1. **bodies** (1/4 of the budget): the body's size (its `Content-Length`, or the body limit
//!    for a chunked body) before it is read.
//! 2. **packets** (3/8): [`PACKET_FACTOR`] × the most the body can inflate to, before decoding;
//!    cut to [`PACKET_FACTOR`] × the real size once decoded, and held until the packet is
//!    applied (the parsed packet, plus what applying it copies).
//! 3. **answers** (3/8): [`ANSWER_FACTOR`] × the size of the node's next answer (estimated
//!    before the write transaction), which caps the answer built in it; cut to the gzip size
//!    once encoded, and held until the response is sent.
//!
//! The stages are always leased in this order (the writer's turn, [`MemoryBudget::writer_turn`],
//! comes between 2 and 3), and nobody waits for an earlier stage while holding a later one, so
//! they cannot deadlock. A lease larger than its pool takes the whole
//! pool (it then runs alone) instead of waiting forever.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ApiResult};
use crate::config::Settings;

/// Permits count KiB, so a pool of any size fits in the semaphore's `u32` leases.
const UNIT: usize = 1024;

/// A decoded packet costs up to this many times its JSON size until it is applied: the parsed
/// packet, the entity copies the apply step writes, and the conflict history rows.
pub const PACKET_FACTOR: usize = 3;

/// An answer costs up to this many times its JSON size while it is built: the loaded entities
/// and their gzip, written side by side (the JSON text itself is never held: it is compressed
/// as it is written, and the hex is made chunk by chunk as the response is sent).
pub const ANSWER_FACTOR: usize = 2;

/// Every answer may hold at least this much JSON: an exchange whose estimate found little
/// pending still takes what arrived between the estimate and its transaction (a small packet's
/// worth, the common case), instead of an empty answer that sends the node straight back.
pub const ANSWER_FLOOR: usize = 1024 * 1024;

/// Deflate cannot inflate more than 1032 bytes from one compressed byte (RFC 1951's longest
/// match in its shortest code), which bounds a packet's size before decoding it.
const DEFLATE_MAX_RATIO: usize = 1032;

/// The three pools, plus the gate in front of the writer.
pub struct MemoryBudget {
    pub bodies: Pool,
    pub packets: Pool,
    pub answers: Pool,
    /// Exchanges allowed to estimate their answer and wait on the writer lock at once. Each
    /// does so on a blocking thread; without a gate, many exchanges queued behind one large
    /// write would take every blocking thread, and `/health` (which needs one) would wait
    /// behind them.
    writers: Arc<Semaphore>,
    /// Tokens whose small exchange bodies may be read before authentication.
    pub known: KnownTokens,
}

/// How many exchanges may hold or wait on the writer lock at once: all blocking threads of a
/// worker but two (`database.pool_size` each; at least 2). The writer commits what is waiting
/// as one batch (group commit, `store::group`), so this is also the largest batch HTTP can form
/// (2, one writing and one ready, capped every commit at two exchanges). Each waits on a
/// blocking thread, so it stays below a worker's threads: `/health` and decoding still find
/// one. More threads instead would cost memory: with 40 per worker, the allocator's per-thread
/// caches took the 100-node scenario from ~240 to ~590 MiB (docs/performance.md).
pub fn writer_gate(pool_size: u32) -> usize {
    (pool_size as usize).saturating_sub(2).max(2)
}

impl MemoryBudget {
    pub fn new(settings: &Settings) -> MemoryBudget {
        let total = settings.server.max_inflight_bytes;
        MemoryBudget {
            bodies: Pool::new(total / 4),
            packets: Pool::new(total / 8 * 3),
            answers: Pool::new(total / 8 * 3),
            writers: Arc::new(Semaphore::new(writer_gate(settings.database.pool_size))),
            known: KnownTokens::new(),
        }
    }

    /// A turn at the writer lock (held until dropped).
    pub async fn writer_turn(&self) -> ApiResult<OwnedSemaphorePermit> {
        self.writers.clone().acquire_owned().await.map_err(closed)
    }
}

/// The most a body of `body_len` bytes (a hex envelope) can inflate to, capped by the packet
/// limit.
pub fn inflated_bound(body_len: usize, max_packet: usize) -> usize {
    (body_len / 2)
        .saturating_mul(DEFLATE_MAX_RATIO)
        .saturating_add(64 * 1024)
        .min(max_packet)
}

/// Node tokens that authenticated recently (their SHA-256, never the token), so an exchange
/// carrying one may read its small body before it is authenticated, and authenticate on the
/// same blocking thread as the rest of the exchange: one thread wake-up less per exchange.
///
/// Why this is safe: the set only changes the order of two steps, never who gets in — the
/// token is still checked against the database before anything is decoded or applied (a
/// disabled node or a rotated token gets its 401 as before). An unknown token is checked first,
/// before a byte of its body is read; one that authenticated once may, until it fails, make
/// the server buffer one small body (at most [`KnownTokens::BODY_BYTES`], within the body
/// pool) before its refusal.
pub struct KnownTokens {
    hashes: parking_lot::Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl KnownTokens {
    /// Bodies up to this size may be read before authentication (a known token only).
    pub const BODY_BYTES: usize = 64 * 1024;
    /// Most tokens remembered; the set starts over when full (a miss costs one wake-up).
    const MAX: usize = 100_000;

    pub fn new() -> KnownTokens {
        KnownTokens {
            hashes: parking_lot::Mutex::new(std::collections::HashSet::new()),
        }
    }

    pub fn contains(&self, token: &str) -> bool {
        self.hashes
            .lock()
            .contains(&crate::engine::auth::sha256(token))
    }

    pub fn remember(&self, token: &str) {
        let mut set = self.hashes.lock();
        if set.len() >= Self::MAX {
            set.clear();
        }
        set.insert(crate::engine::auth::sha256(token));
    }

    pub fn forget(&self, token: &str) {
        self.hashes
            .lock()
            .remove(&crate::engine::auth::sha256(token));
    }
}

impl Default for KnownTokens {
    fn default() -> KnownTokens {
        KnownTokens::new()
    }
}

/// One pool of bytes (cheap to clone: clones share the bytes).
#[derive(Clone)]
pub struct Pool {
    sem: Arc<Semaphore>,
    capacity: usize,
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT).max(1)
}

fn closed(e: tokio::sync::AcquireError) -> ApiError {
    ApiError::Internal(format!("memory budget closed: {e}"))
}

impl Pool {
    fn new(bytes: usize) -> Pool {
        let capacity = units(bytes).min(u32::MAX as usize);
        Pool {
            sem: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Waits until `bytes` are free, and holds them until the lease is dropped.
    pub async fn lease(&self, bytes: usize) -> ApiResult<Lease> {
        let want = units(bytes);
        let exclusive = want >= self.capacity;
        let n = want.min(self.capacity) as u32;
        let permit = self
            .sem
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(closed)?;
        Ok(Lease { permit, exclusive })
    }

    /// `bytes` at once if they are free now, else `None` (nothing held): for a stage already on
    /// a blocking thread, which takes the lease without a trip back to the async worker and
    /// falls back to [`Pool::lease`] only when memory is short.
    pub fn try_lease(&self, bytes: usize) -> Option<Lease> {
        let want = units(bytes);
        let exclusive = want >= self.capacity;
        let n = want.min(self.capacity) as u32;
        let permit = self.sem.clone().try_acquire_many_owned(n).ok()?;
        Some(Lease { permit, exclusive })
    }
}

/// Bytes held from a pool.
pub struct Lease {
    permit: OwnedSemaphorePermit,
    exclusive: bool,
}

impl Lease {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits() * UNIT
    }

    /// True when the lease took its whole pool because it asked for more: nothing else holds
    /// memory from that pool, so the work may exceed the lease.
    pub fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// Gives back everything above `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes);
        let held = self.permit.num_permits();
        if keep < held {
            drop(self.permit.split(held - keep));
            self.exclusive = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[actix_web::test]
    async fn leases_wait_shrink_and_never_exceed_the_pool() {
        let pool = Pool::new(10 * UNIT);
        let mut a = pool.lease(8 * UNIT).await.unwrap();
        assert!(!a.exclusive());
        // 4 KiB more does not fit until `a` shrinks.
        let mut pending = Box::pin(pool.lease(4 * UNIT));
        assert!(pending.as_mut().now_or_never().is_none());
        a.shrink_to(2 * UNIT);
        assert_eq!(a.bytes(), 2 * UNIT);
        let b = pending.await.unwrap();
        assert_eq!(b.bytes(), 4 * UNIT);
        drop((a, b));
        // A lease over the pool takes all of it.
        let big = pool.lease(100 * UNIT).await.unwrap();
        assert!(big.exclusive());
        assert_eq!(big.bytes(), 10 * UNIT);
    }

    #[test]
    fn try_lease_takes_only_what_is_free_now() {
        let pool = Pool::new(10 * UNIT);
        let a = pool.try_lease(8 * UNIT).expect("free");
        assert!(pool.try_lease(4 * UNIT).is_none(), "only 2 KiB are free");
        let b = pool
            .clone()
            .try_lease(2 * UNIT)
            .expect("a clone shares the pool");
        drop(a);
        assert!(pool.try_lease(4 * UNIT).is_some());
        drop(b);
        assert!(pool.try_lease(100 * UNIT).expect("free").exclusive());
    }

    #[test]
    fn the_inflated_bound_follows_the_body_and_the_limit() {
        assert_eq!(inflated_bound(2000, 1 << 30), 1000 * 1032 + 65536);
        assert_eq!(inflated_bound(16 << 20, 64 << 20), 64 << 20);
    }
}
