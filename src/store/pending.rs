//! The pending-queue rule: which entities wait in a node's queue (PROTOCOL §3–4, and §10 when
//! scopes are configured). The rule is stated once, here; below it are the three ways the
//! server has to write it, each for a different cost.
//!
//! # The rule
//!
//! The change log is `entities`: one row per entity, holding its current state, its scope and
//! `seq`, the global sequence number of its latest change (docs/design.md, "The queue"). A node
//! N reads the log through **streams**, each a slice of the log with its own cursor:
//!
//! - without scopes (and for a node with the scope `*`) one stream, the whole log, whose cursor
//!   `c` is `sync_nodes.acked_seq` and registration point `r` is `sync_nodes.registered_seq`
//!   (with scopes, the `*` row of `node_scopes` holds them);
//! - with scopes, one stream per scope of N, plus the global types' stream (scope `''`), each a
//!   `node_scopes` row: the entities whose *current* scope is that scope, cursor `c` =
//!   `acked_seq`, and `r` = `since_seq`, when N got the scope (registration, or the PATCH).
//!
//! N **sees** an entity when its type is among N's types (all by default) and N has `*` or the
//! entity's scope is one of N's streams. An entity `e` is **pending for N in the log** when N
//! sees it and, for the stream holding it:
//!
//! 1. `e.seq > c` — N has not acknowledged this state (a newer change of the entity gets a new,
//!    higher `seq`, so it is pending again even if an older state was acknowledged);
//! 2. `e.holder ≠ N or e.seq ≤ r` — N does not already hold exactly this state (PROTOCOL's
//!    echo rule; the holder is the author of a change applied as sent, NULL — nobody — when the
//!    stored state differs from what anyone sent). Entries from before N had the stream are
//!    sent even when N wrote them: a scope N lost (and was sent DELETEs for) and gains again
//!    must come back whole. For a stream N had since registration nothing that old is N's;
//! 3. `e.deleted ⇒ e.seq > r` — a tombstone only goes to nodes that saw the stream when it was
//!    written: a node that registered (or gained the scope) later never had the entity.
//!
//! **N's queue** is those entries, plus, one entry per entity:
//!
//! - N's own `sync_changes` rows with `seq > sync_nodes.acked_seq` (the server's state re-sent
//!   to N after N lost a conflict): the state when N sees the entity, otherwise a DELETE
//!   without data (N may hold its own losing version of an entity it may no longer see);
//! - **exits** (`scope_exits`, written when an entity's scope changes) of each of N's scope
//!   streams with `seq > max(c, r)` whose entity N does *not* see now: a DELETE without data (it
//!   left N's view; when N sees its new scope, the log already carries its state);
//! - **losses** (`node_scope_losses`, a scope N lost, `*` for the whole log, or every scope after
//!   a types change) with cursor `lc`, `loss_seq` and `acked_at_loss`: the entities of that scope
//!   with `seq > lc`, created at or before `loss_seq`, tombstones only above `acked_at_loss`, and
//!   the scope's exits above `max(lc, acked_at_loss)`, whose entity N does not see now, or is a
//!   tombstone: a DELETE without data (N may hold it and no longer may; a tombstone is owed
//!   even in view, since the stream that replaced the lost one starts at the PATCH).
//!
//! States need N to see a live entity, DELETEs need it not to, or the entity to be deleted: a
//! live entity is never both; a tombstone pending both ways is one DELETE.
//! `pending_changes` is the number of entities in N's queue, which is what N receives if it
//! drains its queue while nothing changes.
//!
//! # Three encodings, one rule
//!
//! - [`log_entries`], [`log_heads`] and [`count_in_log`] write the log part as SQL filters, one
//!   per stream, so the database picks the rows by the `seq` index (or `(scope, seq)`, for a
//!   scope) and only one packet's worth travels (building a packet, one node's status).
//! - [`in_log`] and [`View::sees`] write it as predicates on one entity already in memory, so
//!   checking one queue row, exit or lost entity costs no query beyond its primary-key read.
//! - [`counts_in_log`] writes it as a counting formula over sorted sequence lists, so the counts
//!   of every node come from one pass over the log instead of one scan per node.
//!
//! A change to the rule must change all three. `tests/api/pending_counts.rs` checks, on random
//! logs (with and without scopes), that they agree with each other and with what every node
//! actually receives.

use std::collections::{BTreeSet, HashMap, HashSet};

use diesel::prelude::*;

use super::models::{Entity, Node, ScopeLoss};
use super::schema::entities::dsl as e;
use super::scopes::{self, ALL, GLOBAL};
use super::{entities, queue, Conn, StoreResult};

/// One slice of the log with its own cursor (see the rule).
#[derive(Debug, Clone)]
pub struct Stream {
    /// `None`: the whole log (no scopes, or `*`); otherwise one scope (`''` = global types).
    pub scope: Option<String>,
    /// Every entry of the stream with `seq <= cursor` is done for the node.
    pub cursor: i64,
    /// Tombstones (and exits) at or below this predate the node's view of the stream.
    pub since: i64,
}

/// What one node sees and through which cursors: its streams, losses and types.
#[derive(Debug, Clone)]
pub struct View {
    pub node_id: String,
    /// The hub has `[scopes]` (listings then show the node's scopes and types).
    pub scoped: bool,
    /// The cursor of the node's `sync_changes` rows (`sync_nodes.acked_seq`).
    pub queue_cursor: i64,
    /// The node has `*` (or the hub has no scopes): it sees every scope.
    pub all: bool,
    /// The scopes it sees besides (`''` included), when not `all`.
    scopes: HashSet<String>,
    /// `None` = every type.
    types: Option<HashSet<String>>,
    pub streams: Vec<Stream>,
    pub losses: Vec<ScopeLoss>,
}

impl View {
    /// A hub without `[scopes]`: one stream, the whole log, exactly as before scopes existed.
    pub fn unscoped(n: &Node) -> View {
        View {
            node_id: n.id.clone(),
            scoped: false,
            queue_cursor: n.acked_seq,
            all: true,
            scopes: HashSet::new(),
            types: None,
            streams: vec![Stream {
                scope: None,
                cursor: n.acked_seq,
                since: n.registered_seq,
            }],
            losses: Vec::new(),
        }
    }

    /// The node's view on a hub with `[scopes]`. A node without any scope row (registered
    /// before scopes were configured) keeps seeing everything, as `*`, through its old cursor,
    /// so turning scopes on cuts no existing desktop off before the admin gives it scopes.
    pub fn load(conn: &mut Conn, n: &Node) -> StoreResult<View> {
        let rows = scopes::of_node(conn, &n.id)?;
        let losses = scopes::losses_of(conn, &n.id)?;
        let types = parse_types(n.types.as_deref());
        let mut v = View::unscoped(n);
        v.scoped = true;
        v.types = types;
        v.losses = losses;
        if rows.is_empty() {
            return Ok(v);
        }
        v.all = rows.iter().any(|r| r.scope == ALL);
        v.streams = rows
            .iter()
            .filter(|r| !v.all || r.scope == ALL)
            .map(|r| Stream {
                scope: (r.scope != ALL).then(|| r.scope.clone()),
                cursor: r.acked_seq,
                since: r.since_seq,
            })
            .collect();
        if !v.all {
            v.scopes = rows.into_iter().map(|r| r.scope).collect();
        }
        Ok(v)
    }

    pub fn sees_type(&self, entity_type: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(entity_type))
    }

    /// Whether an entity with this scope is in the node's scopes (its type aside).
    pub fn sees_scope(&self, scope: Option<&str>) -> bool {
        self.all || scope.is_some_and(|s| self.scopes.contains(s))
    }

    /// Whether the node sees an entity of this type and scope (the rule's "sees").
    pub fn sees(&self, entity_type: &str, scope: Option<&str>) -> bool {
        self.sees_type(entity_type) && self.sees_scope(scope)
    }

    /// The node's scopes as the API shows them: `["*"]`, or the tenant scopes (the global
    /// stream is implied).
    pub fn scope_list(&self) -> Vec<String> {
        if self.all {
            return vec![ALL.to_string()];
        }
        let set: BTreeSet<&String> = self.scopes.iter().filter(|s| *s != GLOBAL).collect();
        set.into_iter().cloned().collect()
    }

    pub fn type_list(&self) -> Option<Vec<String>> {
        self.types.as_ref().map(|t| {
            let set: BTreeSet<&String> = t.iter().collect();
            set.into_iter().cloned().collect()
        })
    }

    /// The one scope a write lacking the scope field is stamped with: the node's only scope.
    pub fn single_scope(&self) -> Option<&str> {
        if self.all {
            return None;
        }
        let mut it = self.scopes.iter().filter(|s| *s != GLOBAL);
        match (it.next(), it.next()) {
            (Some(s), None) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The stream an entity of this scope is read through, if the node sees the scope.
    fn stream_of(&self, scope: Option<&str>) -> Option<&Stream> {
        if self.all {
            return self.streams.first();
        }
        let scope = scope?;
        self.streams
            .iter()
            .find(|s| s.scope.as_deref() == Some(scope))
    }
}

/// `sync_nodes.types` (a JSON array) as a set; `None` = every type.
pub fn parse_types(text: Option<&str>) -> Option<HashSet<String>> {
    text.and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .map(|v| v.into_iter().collect())
}

/// Conditions 1–3 for one stream, written as a SQL filter for the database to evaluate by
/// index, boxed so a scope and a type filter can be added.
///
/// A macro rather than a function: the filter's diesel type is long and changes with every
/// edit, and [`log_entries`], [`log_heads`] and [`count_in_log`] need the same expression. The
/// holder test spells out `IS NULL OR <>`, because in SQL `NULL <> N` is NULL, not true.
macro_rules! stream_query {
    ($view:expr, $stream:expr) => {{
        let (v, s) = ($view, $stream);
        let mut q = e::entities
            .filter(
                e::seq
                    .gt(s.cursor)
                    .and(
                        e::holder_node_id
                            .is_null()
                            .or(e::holder_node_id.ne(v.node_id.clone()))
                            .or(e::seq.le(s.since)),
                    )
                    .and(e::is_deleted.eq(false).or(e::seq.gt(s.since))),
            )
            .into_boxed();
        if let Some(scope) = &s.scope {
            q = q.filter(e::scope.eq(scope.clone()));
        }
        if let Some(types) = &v.types {
            q = q.filter(e::entity_type.eq_any(types.iter().cloned().collect::<Vec<_>>()));
        }
        q
    }};
}

/// A stream's query in `seq` order. For one scope the order is spelled `(scope, seq)`, the
/// index's own: PostgreSQL without statistics otherwise walks the `seq` index of the whole log
/// filtering by scope (measured: 87 ms instead of 17 for one tenant of 100, and an empty scope
/// such as `''` read the whole log).
macro_rules! ordered_stream {
    ($view:expr, $stream:expr) => {{
        let s = $stream;
        let q = stream_query!($view, s);
        if s.scope.is_some() {
            q.order((e::scope.asc(), e::seq.asc()))
        } else {
            q.order(e::seq.asc())
        }
    }};
}

/// N's pending log entries, oldest first, at most `limit`: the rule written as SQL, one query
/// per stream, merged in `seq` order (the property test reads whole rows this way).
pub fn log_entries(conn: &mut Conn, v: &View, limit: i64) -> StoreResult<Vec<Entity>> {
    let mut out = Vec::new();
    for s in &v.streams {
        let rows: Vec<Entity> = ordered_stream!(v, s).limit(limit).load(conn)?;
        out.extend(rows);
    }
    out.sort_by_key(|e| e.seq);
    out.truncate(limit.max(0) as usize);
    Ok(out)
}

/// One stream's pending log entries without the data, oldest first, at most `limit`: their
/// data sizes ([`entities::Head`]), so an answer is cut to its byte budget before any large
/// entity is loaded. By the `seq` index, or `(scope, seq)` for a scope: never a row of another
/// scope.
pub fn log_heads(
    conn: &mut Conn,
    v: &View,
    s: &Stream,
    limit: i64,
) -> StoreResult<Vec<entities::Head>> {
    Ok(ordered_stream!(v, s)
        .select(entities::head_columns!())
        .limit(limit)
        .load(conn)?)
}

/// How many log entries are pending for N: the rule written as a SQL `COUNT` per stream, for
/// one node's status, where the database counts from the cursors without sending any row.
pub fn count_in_log(conn: &mut Conn, v: &View) -> StoreResult<i64> {
    let mut total = 0;
    for s in &v.streams {
        let n: i64 = stream_query!(v, s).count().get_result(conn)?;
        total += n;
    }
    Ok(total)
}

/// True when the log alone makes `ent` pending for N: the rule written as a predicate on a row
/// already in memory, for checking N's few `sync_changes` rows without a query each.
pub fn in_log(ent: &Entity, v: &View) -> bool {
    if !v.sees(&ent.entity_type, ent.scope.as_deref()) {
        return false;
    }
    let Some(s) = v.stream_of(ent.scope.as_deref()) else {
        return false;
    };
    ent.seq > s.cursor
        && (ent.holder_node_id.as_deref() != Some(v.node_id.as_str()) || ent.seq <= s.since)
        && (!ent.is_deleted || ent.seq > s.since)
}

/// How many log entries are pending for each node: the rule written as a counting formula, for
/// the hub's statistics and the node list, which need every node's count at once.
///
/// Why: counting per node scans the log from each node's cursor, so an operator listing 1,000
/// nodes that are all 100,000 changes behind waited 53 s. Here the log is streamed once (in
/// `seq` order, bounded pages) into sorted sequence lists, one set per bucket — (scope, type),
/// each part only when some view needs it, so a hub without scopes has one bucket as before —
/// and each node's count is three binary searches per (stream, bucket). Conditions 1–3 for a
/// stream with cursor `c` and since `r` remove from `seq > c` the entries held by N above `r`
/// and the tombstones at or below `r`; the two sets cannot meet (above `r`, at or below it), so
///
/// `|seq > c| − |held by N, seq > max(c, r)| − |deleted, c < seq ≤ r|`.
pub fn counts_in_log(conn: &mut Conn, views: &[View]) -> StoreResult<HashMap<String, i64>> {
    let by_scope = views.iter().any(|v| !v.all);
    let by_type = views.iter().any(|v| v.types.is_some());
    let index: HashMap<&str, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.node_id.as_str(), i))
        .collect();
    type Bucket = (Option<String>, String);
    #[derive(Default)]
    struct Lists {
        all: Vec<i64>,
        deleted: Vec<i64>,
        held: HashMap<usize, Vec<i64>>,
    }
    let mut buckets: HashMap<Bucket, Lists> = HashMap::new();
    let mut after = i64::MIN;
    loop {
        let page = log_page(conn, after, 50_000)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (seq, holder, is_deleted, scope, entity_type) in page {
            let b = (
                if by_scope { scope } else { None },
                if by_type { entity_type } else { String::new() },
            );
            let l = buckets.entry(b).or_default();
            l.all.push(seq);
            if is_deleted {
                l.deleted.push(seq);
            }
            if let Some(i) = holder.as_deref().and_then(|h| index.get(h)) {
                l.held.entry(*i).or_default().push(seq);
            }
        }
    }
    // All lists are in ascending seq order (filled from a seq-ordered scan).
    let above = |v: &[i64], x: i64| (v.len() - v.partition_point(|s| *s <= x)) as i64;
    let between = |v: &[i64], lo: i64, hi: i64| {
        if hi <= lo {
            0
        } else {
            (v.partition_point(|s| *s <= hi) - v.partition_point(|s| *s <= lo)) as i64
        }
    };
    let none = Vec::new();
    let mut out = HashMap::with_capacity(views.len());
    for (i, v) in views.iter().enumerate() {
        let mut count = 0;
        for ((scope, entity_type), l) in &buckets {
            if by_type && !v.sees_type(entity_type) {
                continue;
            }
            for s in &v.streams {
                if s.scope.is_some() && s.scope != *scope {
                    continue;
                }
                let (c, r) = (s.cursor, s.since);
                let held = l.held.get(&i).unwrap_or(&none);
                count += above(&l.all, c) - above(held, c.max(r)) - between(&l.deleted, c, r);
            }
        }
        out.insert(v.node_id.clone(), count);
    }
    Ok(out)
}

/// One change-log entry as [`counts_in_log`] needs it: (seq, holder, deleted, scope, type).
type LogEntry = (i64, Option<String>, bool, Option<String>, String);

/// The change log in `seq` order after `after_seq`, at most `limit` entries (keyset paging, so
/// [`counts_in_log`] streams a large log in bounded memory).
fn log_page(conn: &mut Conn, after_seq: i64, limit: i64) -> StoreResult<Vec<LogEntry>> {
    Ok(e::entities
        .filter(e::seq.gt(after_seq))
        .order(e::seq.asc())
        .select((
            e::seq,
            e::holder_node_id,
            e::is_deleted,
            e::scope,
            e::entity_type,
        ))
        .limit(limit)
        .load(conn)?)
}

/// `pending_changes` of one node (its status): the log part counted by SQL, plus its queue
/// rows, exits and losses not already pending through the log.
pub fn count(conn: &mut Conn, v: &View) -> StoreResult<i64> {
    Ok(count_in_log(conn, v)? + extra(conn, v)?)
}

/// `pending_changes` of many nodes (hub statistics, node list): the log part in one pass, plus
/// each node's queue rows, exits and losses not already pending through the log.
pub fn counts(conn: &mut Conn, views: &[View]) -> StoreResult<HashMap<String, i64>> {
    let mut out = counts_in_log(conn, views)?;
    for v in views {
        let more = extra(conn, v)?;
        *out.entry(v.node_id.clone()).or_insert(0) += more;
    }
    Ok(out)
}

/// Why an entity is in a node's queue besides the log: its state (a `sync_changes` row), or a
/// DELETE because it left the node's view (an exit, a loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    State,
    Gone,
}

/// One queue entry besides the log: an entity, the `seq` it sorts at, and what it delivers.
#[derive(Debug, Clone)]
pub struct ExtraEntry {
    pub entity_type: String,
    pub entity_uuid: String,
    pub seq: i64,
    pub kind: Extra,
    /// The entity's current head (for a state: its size and tombstone flag).
    pub head: entities::Head,
}

/// A source of extra entries read in `seq` order, at most `limit` rows: the entries it yields
/// (already filtered by the rule) and whether it was cut at `limit` rows (then it is complete
/// only up to `last_seq`).
pub struct Page {
    pub entries: Vec<ExtraEntry>,
    pub cut: bool,
    pub last_seq: i64,
}

/// Every extra source of a node, each read from its cursor, at most `limit` rows each: the
/// `sync_changes` rows, each scope stream's exits, each loss (its scope's entities and exits).
pub fn extra_pages(conn: &mut Conn, v: &View, limit: i64) -> StoreResult<Vec<Page>> {
    let mut pages = Vec::new();
    // The node's own queue rows: the current state, when the node still sees it; a DELETE
    // when it no longer does (the node was owed the server's state, e.g. a tombstone after a
    // lost conflict, and may hold a version of its own).
    let rows = queue::pending(conn, &v.node_id, v.queue_cursor, limit)?;
    let mut p = Page {
        cut: rows.len() as i64 == limit,
        last_seq: rows.last().map(|r| r.seq).unwrap_or(i64::MAX),
        entries: Vec::new(),
    };
    for r in rows {
        if let Some(h) = entities::head(conn, &r.entity_type, &r.entity_uuid)? {
            let kind = if v.sees(&h.entity_type, h.scope.as_deref()) {
                Extra::State
            } else {
                Extra::Gone
            };
            p.entries.push(entry(h, r.seq, kind));
        }
    }
    pages.push(p);
    // Exits of the node's scope streams (not the global one: global types never leave it).
    for s in &v.streams {
        let Some(scope) = s.scope.as_deref().filter(|s| *s != GLOBAL) else {
            continue;
        };
        pages.push(exit_page(conn, v, scope, s.cursor.max(s.since), limit)?);
    }
    // Losses: the lost scope's entities (or the whole log's) and its exits.
    for l in &v.losses {
        let mut q = e::entities
            .filter(
                e::seq
                    .gt(l.cursor_seq)
                    .and(e::created_seq.le(l.loss_seq))
                    .and(e::is_deleted.eq(false).or(e::seq.gt(l.acked_at_loss))),
            )
            .into_boxed();
        q = if l.scope != ALL {
            // The index's own order (see `ordered_stream`).
            q.filter(e::scope.eq(l.scope.clone()))
                .order((e::scope.asc(), e::seq.asc()))
        } else {
            q.order(e::seq.asc())
        };
        let heads: Vec<entities::Head> = q
            .select(entities::head_columns!())
            .limit(limit)
            .load(conn)?;
        let mut p = Page {
            cut: heads.len() as i64 == limit,
            last_seq: heads.last().map(|h| h.seq).unwrap_or(i64::MAX),
            entries: Vec::new(),
        };
        for h in heads {
            // A tombstone goes even to a node that sees it: the stream that replaced the
            // lost one starts at the PATCH, and would not bring it.
            if h.is_deleted || !v.sees(&h.entity_type, h.scope.as_deref()) {
                let seq = h.seq;
                p.entries.push(entry(h, seq, Extra::Gone));
            }
        }
        pages.push(p);
        if l.scope != ALL && l.scope != GLOBAL {
            pages.push(exit_page(
                conn,
                v,
                &l.scope,
                l.cursor_seq.max(l.acked_at_loss),
                limit,
            )?);
        }
    }
    Ok(pages)
}

fn entry(h: entities::Head, seq: i64, kind: Extra) -> ExtraEntry {
    ExtraEntry {
        entity_type: h.entity_type.clone(),
        entity_uuid: h.entity_uuid.clone(),
        seq,
        kind,
        head: h,
    }
}

/// A scope's exits after `after`: a DELETE for each entity the node does not see now.
fn exit_page(conn: &mut Conn, v: &View, scope: &str, after: i64, limit: i64) -> StoreResult<Page> {
    let exits = scopes::exits(conn, scope, after, limit)?;
    let mut p = Page {
        cut: exits.len() as i64 == limit,
        last_seq: exits.last().map(|x| x.seq).unwrap_or(i64::MAX),
        entries: Vec::new(),
    };
    for x in exits {
        if let Some(h) = entities::head(conn, &x.entity_type, &x.entity_uuid)? {
            if !v.sees(&h.entity_type, h.scope.as_deref()) {
                p.entries.push(entry(h, x.seq, Extra::Gone));
            }
        }
    }
    Ok(p)
}

/// The node's extra entries, one per entity, that the log does not already make pending.
pub fn extra_entries(conn: &mut Conn, v: &View) -> StoreResult<HashMap<(String, String), Extra>> {
    let mut out = HashMap::new();
    for p in extra_pages(conn, v, i64::MAX)? {
        for x in p.entries {
            let key = (x.entity_type.clone(), x.entity_uuid.clone());
            match entities::get(conn, &x.entity_type, &x.entity_uuid)? {
                Some(ent) if in_log(&ent, v) => continue,
                _ => {}
            }
            out.insert(key, x.kind);
        }
    }
    Ok(out)
}

/// How many entities are in N's queue besides the log (counted once each).
fn extra(conn: &mut Conn, v: &View) -> StoreResult<i64> {
    Ok(extra_entries(conn, v)?.len() as i64)
}

/// True when a loss has nothing left to drain up to now (its rows before any visibility
/// check): the packets have carried its last DELETE, and the row can go. Two indexed probes.
pub fn loss_drained(conn: &mut Conn, l: &ScopeLoss) -> StoreResult<bool> {
    let mut q = e::entities
        .filter(
            e::seq
                .gt(l.cursor_seq)
                .and(e::created_seq.le(l.loss_seq))
                .and(e::is_deleted.eq(false).or(e::seq.gt(l.acked_at_loss))),
        )
        .into_boxed();
    q = if l.scope != ALL {
        q.filter(e::scope.eq(l.scope.clone()))
            .order((e::scope.asc(), e::seq.asc()))
    } else {
        q.order(e::seq.asc())
    };
    let any: Option<i64> = q.select(e::seq).first(conn).optional()?;
    if any.is_some() {
        return Ok(false);
    }
    if l.scope == ALL || l.scope == GLOBAL {
        return Ok(true);
    }
    Ok(scopes::exits(conn, &l.scope, l.cursor_seq.max(l.acked_at_loss), 1)?.is_empty())
}
