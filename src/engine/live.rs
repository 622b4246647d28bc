//! Live notification (PROTOCOL §12): which open event streams a committed write transaction
//! wakes, and how the news crosses server processes.
//!
//! The stream only says *when* to exchange; packets still carry *what*. So this module never
//! decides what a node receives (that is `store::pending`); it decides, from a small summary of
//! a commit, whether a node *may* receive something from it. It may answer "yes" too often (the
//! node exchanges and gets an empty packet), never "no" wrongly (the node would wait for its
//! next poll). docs/design.md, "Live notification", explains the whole path.
//!
//! - [`Engine::write`](super::Engine) summarizes every write transaction that handed out
//!   sequence numbers (one indexed range read of the rows it wrote, inside the transaction) into
//!   a [`Commit`], and publishes it to this process's [`LiveHub`] only **after the commit**, so
//!   an event never races ahead of the data it announces.
//! - On PostgreSQL the same [`Commit`] is also sent with `pg_notify` *inside* the transaction:
//!   PostgreSQL delivers it when (and only if) the transaction commits, to the one listening
//!   connection of every server process ([`Listener`]), which publishes it to its own hub.
//! - [`may_receive`] is the one place that says whether a commit concerns a stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
#[cfg(feature = "postgres")]
use std::time::Duration;

use diesel::prelude::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::schema::entities::dsl as e;
use crate::store::schema::sync_changes::dsl as q;
use crate::store::{self, Conn, StoreResult};

/// What a committed write transaction changed, as much as deciding whom to wake needs: never
/// entity data, so it fits in a PostgreSQL notification (8,000 bytes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CommitSummary {
    /// The sequence numbers the transaction handed out: `first_seq..=last_seq`.
    pub first_seq: i64,
    pub last_seq: i64,
    /// Entity types of the change-log entries it wrote (distinct).
    #[serde(default)]
    pub entity_types: Vec<String>,
    /// The holder of each change-log entry it wrote (distinct): the node that already has
    /// exactly that state (its own change applied as sent), `None` when nobody does (the stored
    /// state differs from what its author sent, or an admin wrote it).
    #[serde(default)]
    pub holders: Vec<Option<String>>,
    /// Nodes given a per-node queue row (`sync_changes`: the server's state re-sent to the loser
    /// of a conflict).
    #[serde(default)]
    pub requeued_for: Vec<String>,
    /// Scopes (PROTOCOL §10) of the entities it touched, before and after. `None`: an unscoped
    /// hub (no `[scopes]`), where every node sees every entity.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The details did not fit in a notification: wake every stream.
    #[serde(default)]
    pub everyone: bool,
}

/// What one stream's node may see (PROTOCOL §10), held in memory with the stream so deciding
/// whom to wake needs no query.
#[derive(Debug, Clone, Default)]
pub struct StreamView {
    pub node_id: String,
    /// The node's scopes (`*` = all); `None` on an unscoped hub.
    pub scopes: Option<Vec<String>>,
    /// The types the node receives; `None` = every type.
    pub types: Option<Vec<String>>,
}

/// May the node of `view` receive something from the commit `c`? The one decision behind
/// waking a stream (docs/design.md, "Live notification").
///
/// The rule (PROTOCOL §3–4, §10): a node receives a change-log entry unless it holds
/// exactly that state itself (the echo rule), and every per-node queue row addressed to it;
/// on a scoped hub only entries within its scopes and types. The summary does not pair each
/// entry's holder with its type and scope, so a commit mixing several entries can wake a node
/// that receives none of them (an empty exchange); it never leaves a node asleep that receives
/// one.
pub fn may_receive(view: &StreamView, c: &CommitSummary) -> bool {
    if c.everyone || c.requeued_for.contains(&view.node_id) {
        return true;
    }
    let not_only_its_own = c
        .holders
        .iter()
        .any(|h| h.as_deref() != Some(view.node_id.as_str()));
    let in_types = match &view.types {
        None => true,
        Some(types) => c.entity_types.iter().any(|t| types.contains(t)),
    };
    let in_scopes = match (&view.scopes, &c.scopes) {
        (None, _) | (_, None) => true,
        (Some(mine), Some(touched)) => mine.iter().any(|s| s == "*" || touched.contains(s)),
    };
    not_only_its_own && in_types && in_scopes
}

/// An event for dashboards (the admin stream): `exchange`, `conflict` or `node`, with a JSON
/// object of details.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdminEvent {
    pub kind: String,
    pub data: serde_json::Value,
}

impl AdminEvent {
    pub fn new(kind: &str, data: serde_json::Value) -> AdminEvent {
        AdminEvent {
            kind: kind.to_string(),
            data,
        }
    }

    /// A conflict for the dashboards: which node's change met it, and its report — the same
    /// event whichever protocol the node wrote through.
    pub fn conflict(
        node: &crate::store::models::Node,
        report: &starsync_protocol::api::ConflictReport,
    ) -> AdminEvent {
        AdminEvent::new(
            "conflict",
            serde_json::json!({
                "node_id": node.id,
                "node_code": node.code,
                "conflict": report,
            }),
        )
    }

    /// A node event after which the node's open streams must end: it was disabled or its token
    /// rotated, and a stream opened with the old credentials must not outlive them; or its
    /// scopes or types changed (`view_changed`), and a stream must not keep deciding with the
    /// old view — the client reconnects at once and hears `pending` with the new one.
    fn ends_streams_of(&self) -> Option<&str> {
        if self.kind != "node" {
            return None;
        }
        let action = self.data.get("action")?.as_str()?;
        matches!(action, "disabled" | "token_rotated" | "view_changed")
            .then(|| self.data.get("node_id")?.as_str())
            .flatten()
    }
}

/// Everything one committed transaction tells the streams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Commit {
    /// The process that committed it (a listener skips its own: it was published in-process).
    pub origin: String,
    /// `None`: no change-log entry or queue row was written (a node registered, say).
    pub summary: Option<CommitSummary>,
    #[serde(default)]
    pub admin: Vec<AdminEvent>,
}

/// Builds the commit summary of a write transaction that started at sequence `before`, inside
/// that transaction: one range read of the change-log entries it wrote (by the `seq` index),
/// and of per-node queue rows only when any exist (they are rare: between a lost conflict and
/// its acknowledgment). `None` when it handed out no sequence number.
///
/// The rows are read plainly and made distinct here, not with `SELECT DISTINCT`: given a
/// DISTINCT, SQLite preferred to walk a whole index that groups by type (`entities_type_seq`)
/// over the `seq` range, so every commit read the entire log — O(log) per write, a third of
/// the hub's CPU during a 100,000-change ingest (docs/performance.md). A commit's own range is
/// small (its packets' changes), so reading it row by row costs next to nothing.
///
/// On a hub with `[scopes]` (`scoped`), it also lists the scopes the commit touched: each new
/// state's scope and each scope an entity left (`scope_exits`, whose nodes get a DELETE), so
/// [`may_receive`] wakes only the nodes that see one of them.
///
/// `last` is the counter at the end of the transaction (the caller knows it: reading it here
/// again would be one more statement under the writer lock).
pub fn summarize(
    conn: &mut Conn,
    before: i64,
    last: i64,
    scoped: bool,
) -> StoreResult<Option<CommitSummary>> {
    if last <= before {
        return Ok(None);
    }
    let rows: Vec<(String, Option<String>, Option<String>)> = e::entities
        .filter(e::seq.gt(before))
        .select((e::entity_type, e::holder_node_id, e::scope))
        .load(conn)?;
    let mut summary = CommitSummary {
        first_seq: before + 1,
        last_seq: last,
        ..CommitSummary::default()
    };
    // An entity without a scope value is seen by `*` nodes only, which match every commit.
    let mut touched: Vec<String> = Vec::new();
    for (t, holder, scope) in rows {
        if !summary.entity_types.contains(&t) {
            summary.entity_types.push(t);
        }
        if !summary.holders.contains(&holder) {
            summary.holders.push(holder);
        }
        if let Some(scope) = scope {
            if scoped && !touched.contains(&scope) {
                touched.push(scope);
            }
        }
    }
    if store::queue::any(conn)? {
        summary.requeued_for = q::sync_changes
            .filter(q::seq.gt(before))
            .select(q::node_id)
            .distinct()
            .load(conn)?;
    }
    if scoped {
        use crate::store::schema::scope_exits::dsl as x;
        // By `scope_exits_seq`, plain rows for the same reason as above.
        let left: Vec<String> = x::scope_exits
            .filter(x::seq.gt(before))
            .select(x::scope)
            .load(conn)?;
        for s in left {
            if !touched.contains(&s) {
                touched.push(s);
            }
        }
        summary.scopes = Some(touched);
    }
    Ok(Some(summary))
}

/// The PostgreSQL channel every server process listens on.
pub const CHANNEL: &str = "starsync_live";

/// The `application_name` of the listening connection.
pub const LISTENER_NAME: &str = "starsync-listen";

/// PostgreSQL refuses notification payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;

/// The notification text of a commit, cut to fit: first admin events beyond the limit are
/// dropped (a dashboard misses some detail), then the summary is reduced to "wake everyone"
/// (streams exchange for nothing, nobody misses a change).
pub fn payload(commit: &Commit) -> String {
    let text = |c: &Commit| serde_json::to_string(c).unwrap_or_default();
    let mut c = commit.clone();
    let mut t = text(&c);
    if t.len() > MAX_PAYLOAD {
        if let Some(s) = c.summary.as_mut() {
            *s = CommitSummary {
                first_seq: s.first_seq,
                last_seq: s.last_seq,
                everyone: true,
                ..CommitSummary::default()
            };
        }
        t = text(&c);
    }
    while t.len() > MAX_PAYLOAD && !c.admin.is_empty() {
        c.admin.truncate(c.admin.len() / 2);
        t = text(&c);
    }
    t
}

/// Sends the commit to every server process's listener, inside the committing transaction:
/// PostgreSQL delivers it on commit and drops it on rollback. Nothing on SQLite (one process
/// per database file serves streams; its hub is told in-process).
pub fn notify_in_tx(conn: &mut Conn, commit: &Commit) -> StoreResult<()> {
    match conn {
        #[cfg(feature = "postgres")]
        store::DbConn::Postgres(pg) => {
            diesel::sql_query(format!("SELECT pg_notify('{CHANNEL}', $1)"))
                .bind::<diesel::sql_types::Text, _>(payload(commit))
                .execute(pg)?;
            Ok(())
        }
        store::DbConn::Sqlite(_) => {
            // One process per SQLite file's writers: nobody else to tell.
            let _ = commit;
            Ok(())
        }
    }
}

/// How one stream is told to act: `notify` wakes its task, `ended` makes it finish (its client
/// went away, or its node was disabled).
#[derive(Default)]
pub struct Wake {
    pub notify: tokio::sync::Notify,
    pub ended: AtomicBool,
}

impl Wake {
    /// Ends the stream (idempotent).
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

/// A node's stream as the hub holds it.
pub struct NodeSignal {
    pub view: StreamView,
    pub wake: Arc<Wake>,
    /// Something this node may receive was committed since its last `pending` event. Set
    /// before waking; the stream clears it right before it counts, so a commit landing during
    /// the count wakes it once more.
    pub dirty: AtomicBool,
}

impl NodeSignal {
    fn poke(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify.notify_one();
    }
}

/// Most admin events queued for one dashboard stream that does not read them; older ones are
/// dropped first (and the stream says so).
const ADMIN_QUEUE: usize = 1_000;

/// A dashboard's stream as the hub holds it.
pub struct AdminSignal {
    pub wake: Arc<Wake>,
    queue: Mutex<VecDeque<AdminEvent>>,
    dropped: AtomicU64,
}

impl AdminSignal {
    /// The events queued since the last call, and how many were dropped for want of room.
    pub fn take(&self) -> (Vec<AdminEvent>, u64) {
        let events = self.queue.lock().drain(..).collect();
        (events, self.dropped.swap(0, Ordering::SeqCst))
    }
}

#[derive(Default)]
struct Streams {
    /// Node streams by node id: a commit is checked against each node's view once, whatever
    /// the number of its streams.
    nodes: HashMap<String, Vec<(u64, Arc<NodeSignal>)>>,
    admins: Vec<(u64, Arc<AdminSignal>)>,
}

/// The open event streams of one server process, and what wakes them. Idle streams cost
/// memory only: nothing polls, a commit wakes the streams it concerns.
pub struct LiveHub {
    /// This process, in the commits it sends to other processes.
    origin: String,
    /// Streams counting `pending_changes` at once. A commit can wake thousands of streams,
    /// and each count is a job on the blocking threads that exchanges also need: with at most
    /// this many queued, an exchange waits behind a few counts, not behind thousands.
    pub counting: tokio::sync::Semaphore,
    max_streams: usize,
    open: AtomicUsize,
    next_id: AtomicU64,
    streams: Mutex<Streams>,
}

/// The server's limit of open streams is reached.
#[derive(Debug)]
pub struct TooManyStreams(pub usize);

/// An open stream's place in the hub: dropping it closes the stream's slot and frees its
/// share of the limit.
pub struct StreamTicket {
    hub: Arc<LiveHub>,
    id: u64,
    node_id: Option<String>,
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let mut s = self.hub.streams.lock();
        match &self.node_id {
            Some(n) => {
                if let Some(list) = s.nodes.get_mut(n) {
                    list.retain(|(id, _)| *id != self.id);
                    if list.is_empty() {
                        s.nodes.remove(n);
                    }
                }
            }
            None => s.admins.retain(|(id, _)| *id != self.id),
        }
        self.hub.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LiveHub {
    /// `counters`: how many streams may count their `pending_changes` at once.
    pub fn new(max_streams: usize, counters: usize) -> Arc<LiveHub> {
        Arc::new(LiveHub {
            origin: uuid::Uuid::new_v4().to_string(),
            counting: tokio::sync::Semaphore::new(counters.max(1)),
            max_streams,
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            streams: Mutex::new(Streams::default()),
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Streams open in this process (for the `starsync_event_streams_open` gauge).
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn admit(&self) -> Result<u64, TooManyStreams> {
        let admitted = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_streams).then_some(n + 1)
            });
        match admitted {
            Ok(_) => Ok(self.next_id.fetch_add(1, Ordering::SeqCst)),
            Err(_) => Err(TooManyStreams(self.max_streams)),
        }
    }

    /// Registers a node's stream.
    pub fn open_node(
        self: &Arc<Self>,
        view: StreamView,
    ) -> Result<(StreamTicket, Arc<NodeSignal>), TooManyStreams> {
        let id = self.admit()?;
        let node_id = view.node_id.clone();
        let signal = Arc::new(NodeSignal {
            view,
            wake: Arc::new(Wake::default()),
            dirty: AtomicBool::new(false),
        });
        self.streams
            .lock()
            .nodes
            .entry(node_id.clone())
            .or_default()
            .push((id, signal.clone()));
        let ticket = StreamTicket {
            hub: self.clone(),
            id,
            node_id: Some(node_id),
        };
        Ok((ticket, signal))
    }

    /// Registers a dashboard's stream.
    pub fn open_admin(
        self: &Arc<Self>,
    ) -> Result<(StreamTicket, Arc<AdminSignal>), TooManyStreams> {
        let id = self.admit()?;
        let signal = Arc::new(AdminSignal {
            wake: Arc::new(Wake::default()),
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
        });
        self.streams.lock().admins.push((id, signal.clone()));
        let ticket = StreamTicket {
            hub: self.clone(),
            id,
            node_id: None,
        };
        Ok((ticket, signal))
    }

    /// Tells the streams a commit concerns. Costs one [`may_receive`] per node with an open
    /// stream (in memory) and nothing per idle stream beyond that; no query.
    pub fn publish(&self, commit: &Commit) {
        let s = self.streams.lock();
        if let Some(summary) = &commit.summary {
            for list in s.nodes.values() {
                let Some((_, first)) = list.first() else {
                    continue;
                };
                if may_receive(&first.view, summary) {
                    for (_, signal) in list {
                        signal.poke();
                    }
                }
            }
        }
        for event in &commit.admin {
            if let Some(node_id) = event.ends_streams_of() {
                for (_, signal) in s.nodes.get(node_id).into_iter().flatten() {
                    signal.wake.end();
                }
            }
        }
        if !commit.admin.is_empty() {
            for (_, admin) in &s.admins {
                {
                    let mut queue = admin.queue.lock();
                    for event in &commit.admin {
                        if queue.len() >= ADMIN_QUEUE {
                            queue.pop_front();
                            admin.dropped.fetch_add(1, Ordering::SeqCst);
                        }
                        queue.push_back(event.clone());
                    }
                }
                admin.wake.notify.notify_one();
            }
        }
    }

    /// Ends every open stream (the server is stopping): a graceful stop waits for open
    /// connections, and a stream never finishes by itself. Clients reconnect to another process
    /// or after the restart.
    pub fn end_all(&self) {
        let s = self.streams.lock();
        for (_, signal) in s.nodes.values().flatten() {
            signal.wake.end();
        }
        for (_, signal) in &s.admins {
            signal.wake.end();
        }
    }

    /// Tells every node stream `pending`: after this process lost its notifications for a
    /// while (a reconnected listener), any of them may have missed one.
    pub fn wake_all(&self) {
        let s = self.streams.lock();
        for (_, signal) in s.nodes.values().flatten() {
            signal.poke();
        }
    }
}

/// The one `LISTEN` connection of a server process on PostgreSQL, on a thread of its own:
/// every commit of another process reaches this process's streams through it. Stops when
/// dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the listener reads its socket while notifications are coming (within
/// [`LISTEN_BUSY`] of the last one). libpq (through diesel) offers no blocking wait for a
/// notification and the workspace forbids the `unsafe` a raw `poll()` on its socket would need,
/// so the thread does one non-blocking read this often: the delay a notification can add, and
/// a cost per process, not per stream.
#[cfg(feature = "postgres")]
const LISTEN_TICK: Duration = Duration::from_millis(2);

/// How often it reads when nothing was heard for [`LISTEN_BUSY`]: an idle process then wakes
/// 100 times a second instead of 500 (measured: 1.9 % of a core at 2 ms), and the first
/// notification after a quiet spell waits at most this long.
#[cfg(feature = "postgres")]
const LISTEN_IDLE_TICK: Duration = Duration::from_millis(10);

/// How long after a notification the listener keeps reading every [`LISTEN_TICK`].
#[cfg(feature = "postgres")]
const LISTEN_BUSY: Duration = Duration::from_secs(2);

/// How often the listener proves its connection alive with a query (a connection dropped
/// without a word, by a firewall say, is otherwise silent).
#[cfg(feature = "postgres")]
const LISTEN_PROBE: Duration = Duration::from_secs(5);

impl Listener {
    /// Starts listening for a PostgreSQL URL; `None` for SQLite.
    pub fn spawn(url: &str, hub: Arc<LiveHub>) -> StoreResult<Option<Listener>> {
        #[cfg(feature = "postgres")]
        if let store::DbUrl::Postgres(url) = store::DbUrl::parse(url)? {
            // Named, so an operator (or a test) can tell it in `pg_stat_activity`.
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{sep}application_name={LISTENER_NAME}");
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::Builder::new()
                .name("starsync-listen".into())
                .spawn(move || listen_loop(&url, &hub, &flag))
                .map_err(|e| {
                    store::StoreError::Url(format!("cannot start the listener thread: {e}"))
                })?;
            return Ok(Some(Listener {
                stop,
                thread: Some(thread),
            }));
        }
        let _ = (url, hub);
        Ok(None)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens until `stop`: connect, `LISTEN`, hand every other process's commit to the hub. When
/// the connection is lost it reconnects with capped exponential backoff and then wakes every
/// stream, since commits made meanwhile were not heard.
#[cfg(feature = "postgres")]
fn listen_loop(url: &str, hub: &LiveHub, stop: &AtomicBool) {
    use diesel::connection::SimpleConnection;
    let mut failures: u32 = 0;
    let mut connected_before = false;
    while !stop.load(Ordering::SeqCst) {
        let conn = diesel::PgConnection::establish(url).map_err(|e| e.to_string());
        let mut conn = match conn.and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {CHANNEL}"))
                .map(|_| c)
                .map_err(|e| e.to_string())
        }) {
            Ok(c) => c,
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2u64.pow(failures.min(6)))
                    .min(Duration::from_secs(5));
                tracing::warn!(error = %e.split_whitespace().collect::<Vec<_>>().join(" "),
                    retry_in_ms = wait.as_millis() as u64,
                    "live notification: cannot listen on PostgreSQL; streams of other processes' \
                     changes wait for the next poll meanwhile");
                sleep_unless(stop, wait);
                continue;
            }
        };
        if connected_before {
            tracing::info!("live notification: listening again; telling every stream `pending`");
            hub.wake_all();
        }
        connected_before = true;
        failures = 0;
        let mut last_probe = std::time::Instant::now();
        let mut last_heard = last_probe - LISTEN_BUSY;
        'listen: while !stop.load(Ordering::SeqCst) {
            for n in conn.notifications_iter() {
                last_heard = std::time::Instant::now();
                match n {
                    Ok(n) => match serde_json::from_str::<Commit>(&n.payload) {
                        Ok(commit) if commit.origin != hub.origin() => hub.publish(&commit),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "live notification: unreadable"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "live notification: listening connection lost");
                        break 'listen;
                    }
                }
            }
            if last_probe.elapsed() >= LISTEN_PROBE {
                last_probe = std::time::Instant::now();
                if let Err(e) = conn.batch_execute("SELECT 1") {
                    tracing::warn!(error = %e, "live notification: listening connection lost");
                    break 'listen;
                }
            }
            std::thread::sleep(if last_heard.elapsed() < LISTEN_BUSY {
                LISTEN_TICK
            } else {
                LISTEN_IDLE_TICK
            });
        }
    }
}

#[cfg(feature = "postgres")]
fn sleep_unless(stop: &AtomicBool, wait: Duration) {
    let until = std::time::Instant::now() + wait;
    while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: &str) -> StreamView {
        StreamView {
            node_id: n.into(),
            ..StreamView::default()
        }
    }

    #[test]
    fn echo_is_suppressed_unless_the_state_differs() {
        let own = CommitSummary {
            holders: vec![Some("a".into())],
            entity_types: vec!["T".into()],
            ..CommitSummary::default()
        };
        assert!(!may_receive(&view("a"), &own));
        assert!(may_receive(&view("b"), &own));
        let differs = CommitSummary {
            holders: vec![None],
            ..own.clone()
        };
        assert!(may_receive(&view("a"), &differs));
        let lost = CommitSummary {
            holders: vec![],
            requeued_for: vec!["a".into()],
            ..CommitSummary::default()
        };
        assert!(may_receive(&view("a"), &lost));
        assert!(!may_receive(&view("b"), &lost));
    }

    #[test]
    fn types_and_scopes_narrow_it() {
        let c = CommitSummary {
            holders: vec![Some("a".into())],
            entity_types: vec!["T".into()],
            scopes: Some(vec!["family-7".into()]),
            ..CommitSummary::default()
        };
        let mut v = view("b");
        v.types = Some(vec!["U".into()]);
        assert!(!may_receive(&v, &c));
        v.types = None;
        v.scopes = Some(vec!["family-8".into()]);
        assert!(!may_receive(&v, &c));
        v.scopes = Some(vec!["*".into()]);
        assert!(may_receive(&v, &c));
    }

    #[test]
    fn an_oversized_payload_wakes_everyone() {
        let commit = Commit {
            origin: "o".into(),
            summary: Some(CommitSummary {
                first_seq: 1,
                last_seq: 900,
                entity_types: (0..900).map(|i| format!("Type{i}")).collect(),
                holders: vec![None],
                ..CommitSummary::default()
            }),
            admin: vec![],
        };
        let text = payload(&commit);
        assert!(text.len() <= MAX_PAYLOAD);
        let back: Commit = serde_json::from_str(&text).unwrap();
        assert!(back.summary.unwrap().everyone);
    }
}
