//! WatermelonDB's `synchronize()` over the engine (PROTOCOL §11.1): a pull streamed from one
//! snapshot of the change log, and a push applied through the same [`apply_change`] as packets,
//! all or nothing, in one write transaction.
//!
//! The cursor (`timestamp` / `last_pulled_at`) is a *pull mark*: a fresh number from the hub's
//! sequence, handed out by exactly one pull and mapped (`watermelon_pulls`) to the last sequence
//! number that pull's snapshot saw. docs/design.md ("WatermelonDB cursors") explains why this
//! never skips or repeats a change and how it tells `created` from `updated`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::apply::{object_fields, Applied, SeqAlloc};
use super::{Engine, EngineError, EngineResult};
use crate::store::models::{Entity, Node};
use crate::store::pending::View;
use crate::store::scopes::{ALL, GLOBAL};
use crate::store::watermelon::{self as wm, Snapshot};
use crate::store::{self, entities, scopes as scope_store};
use starsync_protocol::{validate_change, Change, ClockRule, RejectReason};

/// The largest cursor: JavaScript numbers are exact up to 2^53 − 1.
pub const MAX_CURSOR: i64 = (1 << 53) - 1;

/// Records per page read from the snapshot (and per chunk of the streamed answer): the pull's
/// memory is one page, whatever the size of the data set.
const PAGE: i64 = 500;

/// Most records named in a 409 `conflict` message.
const NAMED: usize = 10;

/// Fields of a WatermelonDB raw record that are the client's bookkeeping, never data: `id` is
/// the entity id, `_status` and `_changed` are local sync state (a pulled record must not carry
/// them, or WatermelonDB refuses it).
const BOOKKEEPING: [&str; 3] = ["id", "_status", "_changed"];

/// The three lists of a table, in the order they are written.
const LISTS: [&str; 3] = ["created", "updated", "deleted"];

/// `last_pulled_at` of a pull: absent, `null` and `0` mean a first pull (None); otherwise a
/// whole number from 1 to [`MAX_CURSOR`].
pub fn parse_pull_cursor(raw: Option<&str>) -> EngineResult<Option<i64>> {
    match raw.map(str::trim) {
        None | Some("") | Some("null") | Some("0") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_CURSOR).contains(n))
            .map(Some)
            .ok_or_else(|| bad_cursor(s)),
    }
}

fn bad_cursor(s: &str) -> EngineError {
    EngineError::InvalidRequest(format!(
        "last_pulled_at {:?} is not a timestamp this server hands out: use null (first pull) or \
         a whole number from 1 to {MAX_CURSOR}",
        s.chars().take(40).collect::<String>()
    ))
}

/// The body of `POST /api/sync/watermelon/push`, as `synchronize()` sends it.
#[derive(Debug, Deserialize)]
pub struct PushRequest {
    pub changes: BTreeMap<String, PushTable>,
    /// The `timestamp` of the pull this push follows.
    pub last_pulled_at: serde_json::Value,
}

/// One table of a push: raw records (`id`, columns, `_status`, `_changed`) and deleted ids.
#[derive(Debug, Default, Deserialize)]
pub struct PushTable {
    #[serde(default)]
    pub created: Vec<Box<RawValue>>,
    #[serde(default)]
    pub updated: Vec<Box<RawValue>>,
    #[serde(default)]
    pub deleted: Vec<String>,
}

/// Records refused one by one (immutable types, and the node's scopes and types), by table:
/// the answer's `experimentalRejectedIds`.
pub type Rejected = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Updated,
    Deleted,
}

/// One pushed record, translated: the entity's id and its `data` (the record without
/// [`BOOKKEEPING`] fields; None for a deletion).
struct Record {
    table: String,
    id: String,
    kind: Kind,
    data: Option<String>,
}

/// Whether a per-change rejection of the engine is a refusal of this one record (listed in
/// `experimentalRejectedIds`, the rest applied) rather than a bad push (422, nothing applied).
///
/// The one place that decides it: the node's view of the data (immutable types, its scopes and
/// types: `forbidden_scope`, `forbidden_type`) refuses records; anything else (an invalid or
/// missing scope value included) means the push itself is malformed. WatermelonDB marks every record of a 2xx
/// push synced, so a refusal must be listed here or the push must fail as a whole.
fn refused_per_record(reason: RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::ImmutableType | RejectReason::ForbiddenScope | RejectReason::ForbiddenType
    )
}

/// The record's data without bookkeeping fields, as JSON text; every value keeps its text.
fn strip_bookkeeping(fields: &[(String, Box<RawValue>)]) -> String {
    let mut out = String::from("{");
    let mut first = true;
    for (k, v) in fields {
        if BOOKKEEPING.contains(&k.as_str()) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&serde_json::Value::from(k.as_str()).to_string());
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    out
}

/// Appends the pulled record of an entity: `{"id": <entity id>, ...data}` without
/// bookkeeping fields (a `data` field named `id` is the entity id's place, and is replaced).
fn write_record(out: &mut Vec<u8>, id: &str, data: &str) {
    write_record_with(out, id, data, &[]);
}

/// [`write_record`] followed by the hub's own fields `extra` (name, JSON text), which take the
/// place of `data` fields of the same names: the change feed's records (PROTOCOL §11.3) are
/// WatermelonDB's plus `updated_at` and `version`.
pub(crate) fn write_record_with(out: &mut Vec<u8>, id: &str, data: &str, extra: &[(&str, String)]) {
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(serde_json::Value::from(id).to_string().as_bytes());
    for (k, v) in object_fields(data).unwrap_or_default() {
        if BOOKKEEPING.contains(&k.as_str()) || extra.iter().any(|(name, _)| *name == k) {
            continue;
        }
        out.push(b',');
        out.extend_from_slice(serde_json::Value::from(k.as_str()).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    for (name, json) in extra {
        out.push(b',');
        out.extend_from_slice(serde_json::Value::from(*name).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(json.as_bytes());
    }
    out.push(b'}');
}

impl Record {
    /// A valid entity type and id (PROTOCOL §1).
    fn well_formed(&self) -> bool {
        starsync_protocol::EntityType::parse(&self.table).is_ok()
            && starsync_protocol::EntityId::parse(&self.id).is_ok()
    }
}

fn translate(changes: BTreeMap<String, PushTable>) -> EngineResult<Vec<Record>> {
    let mut records = Vec::new();
    for (table, t) in changes {
        for (kind, list) in [(Kind::Created, t.created), (Kind::Updated, t.updated)] {
            for raw in list {
                let fields = object_fields(raw.get()).ok_or_else(|| {
                    EngineError::InvalidRequest(format!(
                        "{table}: every created and updated record must be a JSON object"
                    ))
                })?;
                let id = fields
                    .iter()
                    .find(|(k, _)| k == "id")
                    .and_then(|(_, v)| serde_json::from_str::<String>(v.get()).ok())
                    .ok_or_else(|| {
                        EngineError::InvalidRequest(format!(
                            "{table}: every record needs an \"id\" that is a string"
                        ))
                    })?;
                records.push(Record {
                    table: table.clone(),
                    id,
                    kind,
                    data: Some(strip_bookkeeping(&fields)),
                });
            }
        }
        for id in t.deleted {
            records.push(Record {
                table: table.clone(),
                id,
                kind: Kind::Deleted,
                data: None,
            });
        }
    }
    Ok(records)
}

/// The engine change a record stands for, checked by the packets' own rules. `base` is the
/// hub's current version: the push was checked not to be stale, so the client's edit is based
/// on what the hub holds.
fn to_change(r: &Record, existing: Option<&Entity>, now: &str) -> EngineResult<Change> {
    let operation = match (r.kind, existing) {
        (Kind::Deleted, _) => "DELETE",
        // `created` for an existing id is an update (a re-push after a lost answer).
        (_, Some(_)) => "UPDATE",
        (Kind::Created, None) => "INSERT",
        // `updated` for an unknown id creates it (UPDATE of an unknown entity, PROTOCOL §5).
        (Kind::Updated, None) => "UPDATE",
    };
    let data = match &r.data {
        Some(text) => Some(RawValue::from_string(text.clone()).map_err(|e| {
            EngineError::InvalidRequest(format!("{}#{}: {e}", r.table, short(&r.id)))
        })?),
        None => None,
    };
    Ok(Change {
        change_id: uuid::Uuid::new_v4().to_string(),
        entity_type: r.table.clone(),
        entity_uuid: r.id.clone(),
        operation: operation.into(),
        base_version: Some(existing.map_or(0, |e| e.version as u64)),
        version: None,
        updated_at: now.into(),
        data,
        // A WatermelonDB record is the whole state (every column), and the hub never merges a
        // WatermelonDB push: the client merged per column before pushing (PROTOCOL §11.1).
        fields: None,
    })
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Engine {
    /// Applies a WatermelonDB push as the node's changes, all or nothing (PROTOCOL §11.1).
    ///
    /// 409 `conflict` when a pushed record changed on the hub after `last_pulled_at` (nothing
    /// applied); 422 when a record breaks a rule other than the node's view (nothing applied);
    /// otherwise every record is applied except those [`refused_per_record`], which are
    /// returned by table.
    pub fn watermelon_push(&self, node: &Node, push: PushRequest) -> EngineResult<Rejected> {
        let mark = match &push.last_pulled_at {
            serde_json::Value::Number(n) => n
                .as_i64()
                .filter(|m| (1..=MAX_CURSOR).contains(m))
                .ok_or_else(|| bad_cursor(&n.to_string()))?,
            other => {
                return Err(EngineError::InvalidRequest(format!(
                    "last_pulled_at must be the number the last pull answered as `timestamp`, \
                     not {}",
                    short(&other.to_string())
                )))
            }
        };
        let records = translate(push.changes)?;
        let now = starsync_protocol::now_ts();
        let clock = ClockRule::now(self.settings.sync.max_clock_skew_secs);
        self.write(|conn| {
            // Changes after this sequence number are the ones the client has not seen.
            let seen = wm::pull_snapshot(conn, mark)?.unwrap_or(mark);
            let mut seq = SeqAlloc::begin(conn)?;
            let mut ctx = self.node_ctx(&node.id, &now, &mut seq);
            // With scopes (PROTOCOL §10): what this node may see and write, and each new
            // state's scope, exactly as for its packets.
            let scoping = self.scoping();
            let view = self.view(conn, node)?;
            // Only well-formed keys reach a query (PostgreSQL refuses a NUL in any text); the
            // others fail the push with the packets' own message below.
            ctx.preload(
                conn,
                records
                    .iter()
                    .filter(|r| r.well_formed())
                    .map(|r| (r.table.as_str(), r.id.as_str())),
            )?;

            // Stale records first: a 409 applies nothing.
            let mut stale = Vec::new();
            for r in records.iter().filter(|r| r.well_formed()) {
                let Some(e) = ctx.get(conn, &r.table, &r.id)? else {
                    continue;
                };
                // Outside the node's view: refused below, and nothing about it is told here.
                if scoping.is_some() && !view.sees(&e.entity_type, e.scope.as_deref()) {
                    continue;
                }
                let changed_since = e.seq > seen;
                let is_stale = match r.kind {
                    Kind::Created | Kind::Updated => changed_since,
                    // Two clients deleting one record is no conflict.
                    Kind::Deleted => changed_since && !e.is_deleted,
                };
                if is_stale {
                    stale.push(format!("{}#{}", r.table, short(&r.id)));
                }
            }
            if !stale.is_empty() {
                let count = stale.len();
                stale.truncate(NAMED);
                return Err(EngineError::Conflict(format!(
                    "{count} pushed record(s) changed on the server after last_pulled_at {mark} \
                     ({}{}); nothing was applied: pull, then push again",
                    stale.join(", "),
                    if count > NAMED { ", …" } else { "" }
                )));
            }

            let mut rejected = Rejected::new();
            let mut created: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for r in &records {
                let existing = if r.well_formed() {
                    ctx.get(conn, &r.table, &r.id)?
                } else {
                    None
                };
                let change = to_change(r, existing.as_ref(), &now)?;
                let valid = validate_change(&change, &clock).map_err(|rej| {
                    EngineError::InvalidRequest(format!(
                        "{}#{}: {}; nothing was applied",
                        short(&r.table),
                        short(&r.id),
                        rej.message
                    ))
                })?;
                // The scope rules, then the conflict rules (`node_write`).
                match self.apply_node_change(conn, &mut ctx, &view, &change, &valid, false)? {
                    Ok(Applied::Done) | Ok(Applied::Conflict(_)) => {
                        if existing.is_none() && r.kind != Kind::Deleted {
                            created.entry(&r.table).or_default().push(&r.id);
                        }
                    }
                    Err(rej) if refused_per_record(rej.reason) => {
                        rejected
                            .entry(r.table.clone())
                            .or_default()
                            .push(r.id.clone());
                    }
                    Err(rej) => {
                        return Err(EngineError::InvalidRequest(format!(
                            "{}#{}: {}; nothing was applied",
                            r.table,
                            short(&r.id),
                            rej.message
                        )))
                    }
                }
            }
            ctx.flush(conn)?;
            drop(ctx);
            for (table, ids) in &created {
                wm::note_created(conn, table, ids, mark)?;
            }
            seq.finish(conn)?;
            wm::note_sync(conn, &node.id, true, &now)?;
            tracing::info!(
                node = %node.code,
                records = records.len(),
                rejected = rejected.values().map(Vec::len).sum::<usize>(),
                last_pulled_at = mark,
                "watermelon push"
            );
            Ok(rejected)
        })
    }

    /// Starts a WatermelonDB pull: takes a snapshot of the log, hands out a cursor no other
    /// pull gets, and returns the answer as a stream of chunks ([`PullStream::next_chunk`]).
    pub fn watermelon_pull(
        &self,
        node: &Node,
        last_pulled_at: Option<i64>,
    ) -> EngineResult<PullStream> {
        let mut snap = Snapshot::begin(self.pool.get()?)?;
        // The first read fixes the snapshot: it holds exactly the commits up to `upto`, since
        // sequence numbers are taken in commit order (docs/design.md).
        let upto = store::last_seq(snap.conn())?;
        let since = match last_pulled_at {
            None => None,
            Some(l) => Some(Since {
                seq: wm::pull_snapshot(snap.conn(), l)?.unwrap_or(l),
                mark: l,
            }),
        };
        // With scopes, only what the node's view sees (its types, its scopes), from the same
        // snapshot (PROTOCOL §10).
        let view = match self.scoping() {
            Some(_) => Some(self.view(snap.conn(), node)?),
            None => None,
        };
        let mut tables = entities::types(snap.conn(), usize::MAX)?;
        if let Some(v) = &view {
            tables.retain(|t| v.sees_type(t));
        }
        let (had, created_extra, deleted_extra) = match (&view, since) {
            (Some(v), Some(s)) => plan_view_changes(v, s.seq),
            _ => (Had::everything(), Vec::new(), Vec::new()),
        };
        let now = starsync_protocol::now_ts();
        let mark = self.write(|conn| {
            let mark = store::alloc_seq(conn, 1)?;
            wm::insert_pull(conn, mark, &node.id, upto, &now)?;
            wm::note_sync(conn, &node.id, false, &now)?;
            Ok(mark)
        })?;
        if mark > MAX_CURSOR {
            return Err(EngineError::InvalidRequest(
                "the hub's sequence is past 2^53 - 1: WatermelonDB cursors cannot express it"
                    .into(),
            ));
        }
        tracing::info!(node = %node.code, last_pulled_at, mark, upto, "watermelon pull");
        Ok(PullStream {
            snap,
            view,
            mark,
            since,
            tables,
            had,
            extra: [created_extra, Vec::new(), deleted_extra],
            phase: 0,
            exited: HashSet::new(),
            table: 0,
            list: 0,
            after: 0,
            opened: false,
            first_in_list: true,
            tables_written: 0,
            started: false,
            done: false,
        })
    }
}

/// One item of a list: the entity id and, for `created`/`updated`, its data.
type Item = (String, Option<String>);

/// What the client could hold at its last pull: records of the scopes its node saw then.
#[derive(Debug)]
struct Had {
    /// Every scope (the node had `*`, or the hub has no scopes).
    all: bool,
    scopes: HashSet<String>,
}

impl Had {
    fn everything() -> Had {
        Had {
            all: true,
            scopes: HashSet::new(),
        }
    }

    /// Whether the client could hold an entity of this scope (None: no scope value).
    fn had_at(&self, scope: Option<&str>) -> bool {
        self.all || scope.is_some_and(|s| self.scopes.contains(s))
    }
}

/// Where the records a view change owes a client come from, read table by table after the
/// table's log since the cursor.
#[derive(Debug, Clone)]
enum Source {
    /// A scope gained since the client's last pull (None: `*` was gained), for `created`.
    Gained(Option<String>),
    /// A scope the client had: its exits since, for `deleted`.
    Exits(String),
    /// A scope lost since (None: `*` was lost), for `deleted`.
    Lost(Option<String>),
}

/// What the node's view changes since the client's last pull (`upto`, the sequence number it
/// stands for) owe the client (PROTOCOL §10): which scopes it could hold then, where its new
/// records come from (scopes gained since) and which deletions it is owed (exits of scopes it
/// had, scopes lost since). A stream the node had at `upto` has `since ≤ upto`; a scope it lost
/// after `upto` has a loss with `loss_seq > upto`. Only the node's own scopes are read.
fn plan_view_changes(v: &View, upto: i64) -> (Had, Vec<Source>, Vec<Source>) {
    let lost: Vec<_> = v.losses.iter().filter(|l| l.loss_seq > upto).collect();
    let mut had = Had {
        all: v.all && v.streams.first().is_some_and(|s| s.since <= upto),
        scopes: HashSet::new(),
    };
    if !v.all {
        for st in &v.streams {
            if let Some(sc) = &st.scope {
                if st.since <= upto {
                    had.scopes.insert(sc.clone());
                }
            }
        }
    }
    for l in &lost {
        if l.scope == ALL {
            had.all = true;
        } else {
            had.scopes.insert(l.scope.clone());
        }
    }
    let mut created = Vec::new();
    if v.all {
        if !had.all {
            created.push(Source::Gained(None));
        }
    } else if !had.all {
        for st in &v.streams {
            if let Some(sc) = st.scope.as_ref().filter(|sc| !had.scopes.contains(*sc)) {
                created.push(Source::Gained(Some(sc.clone())));
            }
        }
    }
    let mut deleted = Vec::new();
    // A node that sees everything now has nothing out of view (its types aside, and the
    // tables are the types it sees).
    if !v.all {
        let mut exits: Vec<&String> = had.scopes.iter().filter(|s| *s != GLOBAL).collect();
        exits.sort();
        deleted.extend(exits.into_iter().map(|s| Source::Exits(s.clone())));
        for l in &lost {
            if l.scope == ALL {
                deleted.push(Source::Lost(None));
            } else if l.scope != GLOBAL && !v.sees_scope(Some(&l.scope)) {
                deleted.push(Source::Lost(Some(l.scope.clone())));
            }
        }
    }
    (had, created, deleted)
}

/// Where an incremental pull starts: the client's cursor and the log position it stands for.
#[derive(Debug, Clone, Copy)]
struct Since {
    seq: i64,
    mark: i64,
}

/// A pull's answer, produced a page at a time from one snapshot.
///
/// Tables are written one after the other, each with its three lists (one pass over the
/// table's changes per list, in log order), and a table only when it has something: the client
/// needs every list of a table it is given (a missing one crashes it), not every table.
pub struct PullStream {
    snap: Snapshot,
    /// The node's scopes and types (None: a hub without scopes, everything is seen).
    view: Option<View>,
    mark: i64,
    since: Option<Since>,
    tables: Vec<String>,
    /// The scopes the client could hold records of at its last pull.
    had: Had,
    /// Per list, the sources read after the table's log since the cursor (phase 1 on).
    extra: [Vec<Source>; 3],
    /// 0: the table's log since the cursor; `k` ≥ 1: `extra[list][k - 1]`.
    phase: usize,
    /// Ids of the current table already listed in `deleted` from exits (an entity may leave
    /// several scopes); bounded by the exits since the cursor.
    exited: HashSet<String>,
    table: usize,
    /// Index into [`LISTS`] of the pass under way.
    list: usize,
    /// The last sequence number read in this pass.
    after: i64,
    /// The current table's name and first list are written.
    opened: bool,
    first_in_list: bool,
    tables_written: usize,
    started: bool,
    done: bool,
}

impl PullStream {
    /// The cursor this pull hands out.
    pub fn timestamp(&self) -> i64 {
        self.mark
    }

    /// The next piece of the JSON answer, None at the end. Each call reads at most a page.
    pub fn next_chunk(&mut self) -> EngineResult<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.extend_from_slice(b"{\"changes\":{");
        }
        while out.len() < 16 * 1024 {
            if self.table >= self.tables.len() {
                out.extend_from_slice(format!("}},\"timestamp\":{}}}", self.mark).as_bytes());
                self.done = true;
                break;
            }
            self.page(&mut out)?;
        }
        Ok(Some(out))
    }

    /// Lists an incremental pull writes; a first pull fills only `created`.
    fn passes(&self) -> usize {
        if self.since.is_some() {
            3
        } else {
            1
        }
    }

    /// Reads one page of the current pass (the table's log since the cursor, or one of the
    /// view's changes) and writes the records it contributes.
    fn page(&mut self, out: &mut Vec<u8>) -> EngineResult<()> {
        let table = self.tables[self.table].clone();
        let (items, exhausted) = if self.phase == 0 {
            self.log_page(&table)?
        } else {
            self.extra_page(&table)?
        };
        for (id, data) in &items {
            self.emit(out, &table, id, data.as_deref());
        }
        if exhausted {
            self.next_phase(out);
        }
        Ok(())
    }

    /// A page of the table's entities changed since the cursor, sorted into the current list.
    fn log_page(&mut self, table: &str) -> EngineResult<(Vec<Item>, bool)> {
        let from = self.after.max(self.since.map_or(0, |s| s.seq));
        let live_only = self.list < 2;
        let rows = wm::type_page(self.snap.conn(), table, from, live_only, PAGE)?;
        let exhausted = (rows.len() as i64) < PAGE;
        if let Some(last) = rows.last() {
            self.after = last.seq;
        }
        let mut holders = HashSet::new();
        let mut moved = HashMap::new();
        if let Some(s) = self.since {
            let fresh: Vec<&str> = rows
                .iter()
                .filter(|e| e.created_seq > s.seq)
                .map(|e| e.entity_uuid.as_str())
                .collect();
            holders = wm::created_by(self.snap.conn(), table, &fresh, s.mark)?;
            if self.view.is_some() {
                // Where the older ones were at the client's last pull: it holds them only
                // if it saw that scope then.
                let old: Vec<&str> = rows
                    .iter()
                    .filter(|e| e.created_seq <= s.seq)
                    .map(|e| e.entity_uuid.as_str())
                    .collect();
                moved = wm::scopes_at(self.snap.conn(), table, &old, s.seq)?;
            }
        }
        let mut items = Vec::new();
        for e in rows {
            if self.list_of(&e, &holders, &moved) == Some(self.list) {
                items.push(self.item(e));
            }
        }
        Ok((items, exhausted))
    }

    /// A page of one of the view's changes since the client's last pull (PROTOCOL §10: an
    /// app is told what entered and what left its view, as packet nodes are).
    fn extra_page(&mut self, table: &str) -> EngineResult<(Vec<Item>, bool)> {
        let Some(s) = self.since else {
            return Ok((Vec::new(), true));
        };
        let source = self.extra[self.list][self.phase - 1].clone();
        let mut items = Vec::new();
        let (exhausted, last) = match source {
            // A scope gained since: its live entities up to the cursor, which the client
            // cannot hold (those after it are in the log pass).
            Source::Gained(scope) => {
                let rows = wm::gained_page(
                    self.snap.conn(),
                    table,
                    scope.as_deref(),
                    self.after,
                    s.seq,
                    PAGE,
                )?;
                let page = ((rows.len() as i64) < PAGE, rows.last().map(|e| e.seq));
                for e in rows {
                    if self.sees(&e) && !self.had.had_at(e.scope.as_deref()) {
                        items.push(self.item(e));
                    }
                }
                page
            }
            // Entities that left a scope the client had, after its last pull, and are not in
            // the view now.
            Source::Exits(scope) => {
                let rows = scope_store::exits_of_type(
                    self.snap.conn(),
                    &scope,
                    table,
                    self.after.max(s.seq),
                    PAGE,
                )?;
                let page = ((rows.len() as i64) < PAGE, rows.last().map(|x| x.seq));
                for x in rows {
                    let Some(e) = entities::get(self.snap.conn(), table, &x.entity_uuid)? else {
                        continue;
                    };
                    if !self.sees(&e) && self.exited.insert(x.entity_uuid.clone()) {
                        items.push((x.entity_uuid, None));
                    }
                }
                page
            }
            // A scope the node lost since: every entity of it the client may hold and no
            // longer sees (deleted ones included).
            Source::Lost(scope) => {
                let rows = wm::lost_page(
                    self.snap.conn(),
                    table,
                    scope.as_deref(),
                    s.seq,
                    self.after,
                    PAGE,
                )?;
                let page = ((rows.len() as i64) < PAGE, rows.last().map(|e| e.seq));
                // Entities newer than the cursor: only those the client's own push created.
                let fresh: Vec<&str> = rows
                    .iter()
                    .filter(|e| e.created_seq > s.seq)
                    .map(|e| e.entity_uuid.as_str())
                    .collect();
                let holders = wm::created_by(self.snap.conn(), table, &fresh, s.mark)?;
                for e in rows {
                    let held = e.created_seq <= s.seq || holders.contains(&e.entity_uuid);
                    if held && !self.sees(&e) && !self.exited.contains(&e.entity_uuid) {
                        items.push((e.entity_uuid, None));
                    }
                }
                page
            }
        };
        if let Some(last) = last {
            self.after = last;
        }
        Ok((items, exhausted))
    }

    /// Whether the node's view (None: no scopes) sees an entity.
    fn sees(&self, e: &Entity) -> bool {
        self.view
            .as_ref()
            .is_none_or(|v| v.sees(&e.entity_type, e.scope.as_deref()))
    }

    /// An entity as an item of the current list: its id, and its data unless `deleted`.
    fn item(&self, e: Entity) -> Item {
        (e.entity_uuid, (self.list < 2).then_some(e.data))
    }

    /// Writes one item of the current list, opening the table and the list if needed.
    fn emit(&mut self, out: &mut Vec<u8>, table: &str, id: &str, data: Option<&str>) {
        if !self.opened {
            if self.tables_written > 0 {
                out.push(b',');
            }
            out.extend_from_slice(serde_json::Value::from(table).to_string().as_bytes());
            out.extend_from_slice(b":{");
            for earlier in &LISTS[..self.list] {
                out.extend_from_slice(format!("\"{earlier}\":[],").as_bytes());
            }
            out.extend_from_slice(format!("\"{}\":[", LISTS[self.list]).as_bytes());
            self.opened = true;
            self.first_in_list = true;
            self.tables_written += 1;
        }
        if !self.first_in_list {
            out.push(b',');
        }
        self.first_in_list = false;
        match data {
            Some(data) => write_record(out, id, data),
            None => out.extend_from_slice(serde_json::Value::from(id).to_string().as_bytes()),
        }
    }

    /// The current phase is read to its end: the next source of this list, or the next list.
    fn next_phase(&mut self, out: &mut Vec<u8>) {
        self.after = 0;
        if self.since.is_some() && self.phase < self.extra[self.list].len() {
            self.phase += 1;
            return;
        }
        self.phase = 0;
        self.end_pass(out);
    }

    /// Which list an entity of the current table belongs to for this puller (None: none).
    ///
    /// A client holds an entity when it existed at the client's last pull in a scope the
    /// client saw then (the client got it then or before; `moved` gives the scope it has left
    /// since, if any), or when the client's own push created it (that push carried the
    /// client's cursor, which no other client has). Held and live: `updated`; held and deleted:
    /// `deleted`; live and not held: `created`; deleted and never held: nothing to say.
    fn list_of(
        &self,
        e: &Entity,
        holders: &HashSet<String>,
        moved: &HashMap<String, String>,
    ) -> Option<usize> {
        if !self.sees(e) {
            return None;
        }
        let Some(s) = self.since else {
            return (!e.is_deleted).then_some(0);
        };
        let scope_then = moved
            .get(&e.entity_uuid)
            .map(String::as_str)
            .or(e.scope.as_deref());
        let holds = holders.contains(&e.entity_uuid)
            || (e.created_seq <= s.seq && self.had.had_at(scope_then));
        match (e.is_deleted, holds) {
            (false, false) => Some(0),
            (false, true) => Some(1),
            (true, true) => Some(2),
            (true, false) => None,
        }
    }

    fn end_pass(&mut self, out: &mut Vec<u8>) {
        let passes = self.passes();
        if self.opened {
            out.push(b']');
            if self.list + 1 < LISTS.len() {
                if self.list + 1 < passes {
                    out.extend_from_slice(format!(",\"{}\":[", LISTS[self.list + 1]).as_bytes());
                    self.first_in_list = true;
                } else {
                    for later in &LISTS[self.list + 1..] {
                        out.extend_from_slice(format!(",\"{later}\":[]").as_bytes());
                    }
                }
            }
        }
        self.list += 1;
        self.after = 0;
        if self.list >= passes {
            if self.opened {
                out.push(b'}');
            }
            self.table += 1;
            self.list = 0;
            self.opened = false;
            self.exited.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors() {
        assert_eq!(parse_pull_cursor(None).unwrap(), None);
        assert_eq!(parse_pull_cursor(Some("null")).unwrap(), None);
        assert_eq!(parse_pull_cursor(Some("0")).unwrap(), None);
        assert_eq!(parse_pull_cursor(Some("42")).unwrap(), Some(42));
        assert_eq!(
            parse_pull_cursor(Some("9007199254740991")).unwrap(),
            Some(MAX_CURSOR)
        );
        for bad in ["-1", "9007199254740992", "1.5", "abc", "1e3"] {
            assert!(parse_pull_cursor(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_lose_bookkeeping_and_keep_values() {
        let fields =
            object_fields(r#"{"id":"a","_status":"created","_changed":"","n":1.50,"s":"x"}"#)
                .unwrap();
        assert_eq!(strip_bookkeeping(&fields), r#"{"n":1.50,"s":"x"}"#);
        let mut out = Vec::new();
        write_record(&mut out, "a1B2", r#"{"id":"other","n":1.50,"_status":"x"}"#);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":"a1B2","n":1.50}"#);
    }
}
