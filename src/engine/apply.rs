//! Applying one node change to the entity store: the conflict rules of PROTOCOL §5.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;

use super::fields::{self as field_rules, FieldVersions};
use crate::config::{Strategy, TypeRules};
use crate::store::models::{Entity, HistoryRow, QueueRow};
use crate::store::{entities, history, queue, Conn, StoreError, StoreResult};
use starsync_protocol::api::ConflictReport;
use starsync_protocol::fields;
use starsync_protocol::Strategy as WireStrategy;
use starsync_protocol::{
    self, Change, ChangeRejection, Operation, RejectReason, Resolution, ValidChange, Winner,
};

/// Hands out global sequence numbers inside one write transaction; the counter row is written
/// back once at the end ([`SeqAlloc::finish`]).
pub struct SeqAlloc {
    next: i64,
    start: i64,
}

impl SeqAlloc {
    pub fn begin(conn: &mut Conn) -> StoreResult<SeqAlloc> {
        let last = crate::store::last_seq(conn)?;
        Ok(SeqAlloc {
            next: last + 1,
            start: last + 1,
        })
    }

    pub fn take(&mut self) -> i64 {
        let s = self.next;
        self.next += 1;
        s
    }

    /// Highest number handed out so far (or the stored one when none was).
    pub fn last(&self) -> i64 {
        self.next - 1
    }

    /// Writes the counter back; returns the highest number handed out (the stored one when
    /// none was).
    pub fn finish(self, conn: &mut Conn) -> StoreResult<i64> {
        let used = self.next - self.start;
        if used > 0 {
            crate::store::alloc_seq(conn, used)?;
        }
        Ok(self.last())
    }
}

/// What applying one change did.
#[derive(Debug)]
pub enum Applied {
    /// Applied, or a no-op (deleting what is not there).
    Done,
    /// A conflict, recorded in history.
    Conflict(ConflictReport),
}

/// The context of one packet being applied: who sends it, and a write-behind cache of the
/// entities it touches.
///
/// Why a cache: a packet of 100 changes would otherwise cost 100 primary-key reads and 100
/// single-row inserts. The cache loads all of a packet's entities in one query per type
/// ([`ApplyCtx::preload`]) and writes new entities as multi-row INSERTs when the packet is done
/// ([`ApplyCtx::flush`]); changes to the same entity inside one packet see each other's results.
pub struct ApplyCtx<'a> {
    pub node_id: &'a str,
    pub now: &'a str,
    pub seq: &'a mut SeqAlloc,
    /// `server.max_entity_bytes`: larger changes are rejected ([`entity_size_rule`]).
    pub max_entity_bytes: usize,
    cache: HashMap<(String, String), Slot>,
    /// Whether `sync_changes` may hold rows (checked once per packet): when it is empty, a new
    /// version has no per-node rows to clear, and the DELETE is skipped.
    queue_rows: Option<bool>,
    /// With scopes: the rules that give a state its scope (`entities.scope`). Every new
    /// version gets its scope here, and one that leaves a scope writes one `scope_exits` row
    /// (O(1), whatever the number of nodes). `None` without scopes: nothing is computed.
    pub scoping: Option<super::scopes::Scoping<'a>>,
    /// The change's `base_version` alone decides whether it is concurrent: the node's own
    /// unacknowledged version is no exception, and an update of an entity the node deleted
    /// itself loses to the deletion. PROTOCOL §5's exception assumes one client per node,
    /// which a token shared by several apps is not (§11): simple push (last writer by time,
    /// the base derived from the timestamps) and REST writes (the base is `If-Match`) set it.
    /// False for packets.
    pub strict_base: bool,
}

/// One cached entity and what must be written for it at flush.
#[derive(Clone)]
struct Slot {
    entity: Option<Entity>,
    write: Pending,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    Insert,
    Update,
}

impl<'a> ApplyCtx<'a> {
    pub fn new(
        node_id: &'a str,
        now: &'a str,
        seq: &'a mut SeqAlloc,
        max_entity_bytes: usize,
    ) -> ApplyCtx<'a> {
        ApplyCtx {
            node_id,
            now,
            seq,
            max_entity_bytes,
            cache: HashMap::new(),
            queue_rows: None,
            scoping: None,
            strict_base: false,
        }
    }

    /// The entity as this packet has left it so far (the scope rules read it before a change).
    pub fn current(&mut self, conn: &mut Conn, t: &str, u: &str) -> StoreResult<Option<Entity>> {
        self.get(conn, t, u)
    }

    /// The stored state of `t/u` differs from what its author sent (the server stamped its
    /// scope): nobody holds it, so the author receives it back (PROTOCOL §3's echo rule).
    pub fn unhold(&mut self, t: &str, u: &str, change_id: &str) {
        if let Some(Slot {
            entity: Some(e), ..
        }) = self.cache.get_mut(&(t.to_string(), u.to_string()))
        {
            if e.change_id.as_deref() == Some(change_id) && e.author_node_id.is_some() {
                e.holder_node_id = None;
            }
        }
    }

    /// Loads the given entities with one query per entity type.
    pub fn preload<'k>(
        &mut self,
        conn: &mut Conn,
        keys: impl Iterator<Item = (&'k str, &'k str)>,
    ) -> StoreResult<()> {
        let mut by_type: HashMap<&str, Vec<&str>> = HashMap::new();
        for (t, u) in keys {
            if !self.cache.contains_key(&(t.to_string(), u.to_string())) {
                by_type.entry(t).or_default().push(u);
            }
        }
        for (t, uuids) in by_type {
            for chunk in uuids.chunks(500) {
                for e in entities::get_many(conn, t, chunk)? {
                    self.cache.insert(
                        (e.entity_type.clone(), e.entity_uuid.clone()),
                        Slot {
                            entity: Some(e),
                            write: Pending::Nothing,
                        },
                    );
                }
                for u in chunk {
                    self.cache
                        .entry((t.to_string(), u.to_string()))
                        .or_insert(Slot {
                            entity: None,
                            write: Pending::Nothing,
                        });
                }
            }
        }
        Ok(())
    }

    /// The entity as this packet has left it so far (loaded once).
    pub(crate) fn get(&mut self, conn: &mut Conn, t: &str, u: &str) -> StoreResult<Option<Entity>> {
        let key = (t.to_string(), u.to_string());
        if let Some(slot) = self.cache.get(&key) {
            return Ok(slot.entity.clone());
        }
        let e = entities::get(conn, t, u)?;
        self.cache.insert(
            key,
            Slot {
                entity: e.clone(),
                write: Pending::Nothing,
            },
        );
        Ok(e)
    }

    /// Records the entity's new state; written at [`ApplyCtx::flush`].
    fn put(&mut self, conn: &mut Conn, mut e: Entity) -> StoreResult<()> {
        if let Some(sc) = self.scoping {
            e.scope = sc.entity_scope(&e.entity_type, &e.data);
            let key = (e.entity_type.clone(), e.entity_uuid.clone());
            let old = self.cache.get(&key).and_then(|s| s.entity.as_ref());
            if let Some(Some(left)) = old
                .map(|o| o.scope.as_ref())
                .filter(|s| *s != e.scope.as_ref())
            {
                crate::store::scopes::record_exit(
                    conn,
                    &crate::store::models::ScopeExit {
                        scope: left.clone(),
                        seq: e.seq,
                        entity_type: e.entity_type.clone(),
                        entity_uuid: e.entity_uuid.clone(),
                        created_at: self.now.to_string(),
                    },
                )?;
            }
        }
        if self.queue_rows.is_none() {
            self.queue_rows = Some(queue::any(conn)?);
        }
        if self.queue_rows == Some(true) {
            queue::clear_entity(conn, &e.entity_type, &e.entity_uuid)?;
        }
        let key = (e.entity_type.clone(), e.entity_uuid.clone());
        let slot = self.cache.entry(key).or_insert(Slot {
            entity: None,
            write: Pending::Nothing,
        });
        slot.write = match (slot.write, slot.entity.is_some()) {
            (Pending::Insert, _) => Pending::Insert,
            (Pending::Update, _) => Pending::Update,
            (Pending::Nothing, true) => Pending::Update,
            (Pending::Nothing, false) => Pending::Insert,
        };
        slot.entity = Some(e);
        Ok(())
    }

    fn requeued(&mut self) {
        self.queue_rows = Some(true);
    }

    /// Writes every buffered entity: new ones as multi-row INSERTs, changed ones one UPDATE each.
    pub fn flush(&mut self, conn: &mut Conn) -> StoreResult<()> {
        let mut inserts = Vec::new();
        for slot in self.cache.values_mut() {
            match slot.write {
                Pending::Nothing => continue,
                Pending::Insert => inserts.push(slot.entity.clone().expect("written slot")),
                Pending::Update => {
                    entities::update(conn, slot.entity.as_ref().expect("written slot"))?
                }
            }
            slot.write = Pending::Nothing;
        }
        // Bound the statement's parameter count (12 per row) well under SQLite's limit.
        for chunk in inserts.chunks(1000) {
            entities::insert_many(conn, chunk)?;
        }
        Ok(())
    }
}

/// Applies one change like [`apply_change`], but inside a savepoint and written at once, so
/// that a statement the database refuses rejects this change alone.
///
/// Why: a packet cannot change once numbered, so a change the database refuses for its values
/// would otherwise fail the packet's transaction on every resend and stop the node for good.
/// Used only when a packet's transaction failed that way (see `Engine::exchange`); if the
/// transaction then commits, the database works and the refusal was about this change.
pub fn apply_change_isolated(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    rules: Option<&TypeRules>,
    strategy: Strategy,
    c: &Change,
    valid: &ValidChange,
) -> Result<Result<Applied, ChangeRejection>, StoreError> {
    use diesel::Connection;
    let key = (c.entity_type.clone(), c.entity_uuid.clone());
    let saved = (ctx.cache.get(&key).cloned(), ctx.queue_rows);
    let result = conn.transaction(|conn| {
        let applied = apply_change(conn, ctx, rules, strategy, c, valid)?;
        ctx.flush(conn)?;
        Ok::<_, StoreError>(applied)
    });
    match result {
        Err(e) if e.is_statement_refusal() => {
            // The savepoint is rolled back; so is what the cache knew of the change.
            match saved.0 {
                Some(slot) => ctx.cache.insert(key, slot),
                None => ctx.cache.remove(&key),
            };
            ctx.queue_rows = saved.1;
            tracing::warn!(
                error = %e,
                entity_type = %c.entity_type,
                entity_uuid = %c.entity_uuid,
                "the database refused a change; it is rejected, the rest of its packet applied"
            );
            Ok(Err(ChangeRejection::new(
                RejectReason::DatabaseRefused,
                "the database refused to store this change; the server log has the details",
            )))
        }
        other => other,
    }
}

/// The entity size rule, for every way an entity is written (node changes, admin writes,
/// conflict resolutions): `data` (its JSON text, in bytes) at most `limit`.
///
/// Why: the server sends every entity to every other node, in packets bounded by the answer
/// budget; an entity that did not fit in one could never be delivered, and since packets go
/// oldest first, nothing behind it either. The configuration guarantees that an entity of
/// `limit` bytes fits in an answer (`Settings::validate`).
pub fn entity_size_rule(data: &str, limit: usize) -> Result<(), ChangeRejection> {
    if data.len() <= limit {
        return Ok(());
    }
    Err(ChangeRejection::new(
        RejectReason::EntityTooLarge,
        format!(
            "data is {} bytes, over this server's entity limit of {limit} bytes \
             (server.max_entity_bytes)",
            data.len()
        ),
    ))
}

/// Applies a change that passed [`starsync_protocol::validate_change`]. Rejections are per change;
/// store errors abort the whole packet.
pub fn apply_change(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    rules: Option<&TypeRules>,
    strategy: Strategy,
    c: &Change,
    valid: &ValidChange,
) -> Result<Result<Applied, ChangeRejection>, StoreError> {
    let op = valid.operation;
    if let (Operation::Update, Some(fields)) = (op, c.fields.as_deref()) {
        let change = FieldChange {
            change_id: &c.change_id,
            entity_type: &c.entity_type,
            entity_uuid: &c.entity_uuid,
            base_version: c.base_version.unwrap_or(0) as i64,
            updated_at: &valid.updated_at,
            data: c.data_text(),
            fields,
        };
        return apply_field_change(conn, ctx, rules, strategy, &change);
    }
    if let Err(r) = immutable_rule(rules, &c.entity_type) {
        return Ok(Err(r));
    }
    if op != Operation::Delete {
        if let Err(r) = entity_size_rule(c.data_text(), ctx.max_entity_bytes) {
            return Ok(Err(r));
        }
    }
    let updated_at = valid.updated_at.clone();
    let mut base = c.base_version.unwrap_or(0) as i64;
    let existing = ctx.get(conn, &c.entity_type, &c.entity_uuid)?;
    let Some(e) = existing else {
        if op == Operation::Delete {
            return Ok(Ok(Applied::Done));
        }
        // INSERT always means "based on nothing"; an UPDATE claiming a server version the
        // server never had is ahead of it.
        if op == Operation::Update && base > 0 {
            return Ok(Err(version_ahead(base, 0)));
        }
        let seq = ctx.seq.take();
        ctx.put(
            conn,
            Entity {
                entity_type: c.entity_type.clone(),
                entity_uuid: c.entity_uuid.clone(),
                data: c.data_text().to_string(),
                version: 1,
                updated_at,
                is_deleted: false,
                author_node_id: Some(ctx.node_id.to_string()),
                holder_node_id: Some(ctx.node_id.to_string()),
                seq,
                created_seq: seq,
                change_id: Some(c.change_id.clone()),
                applied_at: ctx.now.to_string(),
                // Every field was written now, by this node.
                field_versions: None,
                scope: None,
            },
        )?;
        return Ok(Ok(Applied::Done));
    };

    if op == Operation::Insert {
        base = 0;
    }
    // change_id is the author's idempotency key: the change that produced the current version,
    // arriving again (in a new packet, e.g. from a node that lost its packet store), is not
    // applied twice.
    if e.change_id.as_deref() == Some(c.change_id.as_str())
        && e.author_node_id.as_deref() == Some(ctx.node_id)
    {
        return Ok(Ok(Applied::Done));
    }
    if base > e.version {
        return Ok(Err(version_ahead(base, e.version)));
    }
    let own = is_own(&e, ctx.node_id) && !ctx.strict_base;
    let concurrent = base < e.version && !own;

    if e.is_deleted {
        if op == Operation::Delete {
            return Ok(Ok(Applied::Done));
        }
        let resurrect = rules.map(|r| r.resurrect).unwrap_or(false);
        if resurrect || own {
            write_as_sent(conn, ctx, &e, c, updated_at)?;
            return Ok(Ok(Applied::Done));
        }
        // Delete wins: the update is kept in history and the tombstone goes back to the node.
        let report = record_conflict(
            conn,
            ctx,
            &e,
            &c.change_id,
            Some(ctx.node_id.to_string()),
            c.data_text().to_string(),
            Resolution::new(WireStrategy::DeleteWins, Winner::Server),
        )?;
        requeue_for_node(conn, ctx, &e)?;
        return Ok(Ok(Applied::Conflict(report)));
    }

    if op == Operation::Delete {
        if concurrent {
            let report = record_conflict(
                conn,
                ctx,
                &e,
                &c.change_id,
                e.author_node_id.clone(),
                e.data.clone(),
                Resolution::new(WireStrategy::DeleteWins, Winner::Client),
            )?;
            write_version(conn, ctx, &e, e.data.clone(), true, updated_at, Some(c))?;
            return Ok(Ok(Applied::Conflict(report)));
        }
        write_version(conn, ctx, &e, e.data.clone(), true, updated_at, Some(c))?;
        return Ok(Ok(Applied::Done));
    }

    if !concurrent {
        write_as_sent(conn, ctx, &e, c, updated_at)?;
        return Ok(Ok(Applied::Done));
    }

    // A real conflict between the node's upsert and a live server version.
    let client_wins = client_wins(strategy, &updated_at, &e);
    let priority = rules.map(|r| &r.priority_values);
    if client_wins {
        let report = record_conflict(
            conn,
            ctx,
            &e,
            &c.change_id,
            e.author_node_id.clone(),
            e.data.clone(),
            Resolution::new(strategy.wire(), Winner::Client),
        )?;
        match merge_priority(c.data_text(), &e.data, priority) {
            None => write_as_sent(conn, ctx, &e, c, updated_at)?,
            // The merged state differs from what the node sent: it is the hub's version (sent to
            // everyone, the node included), so the node's later stale edits conflict again
            // instead of silently dropping the priority value.
            Some(merged) => write_version(conn, ctx, &e, merged, false, updated_at, None)?,
        }
        return Ok(Ok(Applied::Conflict(report)));
    }

    let winner = if strategy == Strategy::Manual {
        Winner::Pending
    } else {
        Winner::Server
    };
    let report = record_conflict(
        conn,
        ctx,
        &e,
        &c.change_id,
        Some(ctx.node_id.to_string()),
        c.data_text().to_string(),
        Resolution::new(strategy.wire(), winner),
    )?;
    let merged = if strategy == Strategy::Manual {
        None
    } else {
        merge_priority(&e.data, c.data_text(), priority)
    };
    match merged {
        // "Done wins": the server's state takes the loser's priority value — a new version
        // for everyone, the losing node included.
        Some(data) => {
            write_version(conn, ctx, &e, data, false, e.updated_at.clone(), None)?;
        }
        None => requeue_for_node(conn, ctx, &e)?,
    }
    Ok(Ok(Applied::Conflict(report)))
}

/// A change that names the top-level fields it sets (PROTOCOL §5.1), wherever it came from: a
/// packet change with `fields`, or a partial update (delta sync, `PATCH`) whose data carries
/// only the fields it changes. Either way the same rule applies, here and only here.
#[derive(Debug, Clone, Copy)]
pub struct FieldChange<'c> {
    /// The author's idempotency key.
    pub change_id: &'c str,
    pub entity_type: &'c str,
    pub entity_uuid: &'c str,
    /// The server version the edit was based on.
    pub base_version: i64,
    /// Normalized (`validate_change`).
    pub updated_at: &'c str,
    /// A JSON object with the named fields' new values; a named field it lacks was removed,
    /// and fields it holds but does not name are ignored (the server's values stay).
    pub data: &'c str,
    /// The named fields, each once.
    pub fields: &'c [String],
}

/// Applies a [`FieldChange`] (PROTOCOL §5.1). With `b` its base version:
/// - no named field was changed after `b` by someone other than the change's author: the named
///   fields are written over the current state as a new version, no history row. The author
///   holds the result only when it equals the data it sent; otherwise (other writers' fields
///   merged in) it receives the new version too.
/// - otherwise the overlapping fields are decided by the type's strategy, the other named fields
///   apply anyway, and one history row keeps the losing side: the node's version (the current
///   state with all its named fields) when the server kept the overlapping fields, the
///   overwritten server version when the node won them. `priority_values` act on the
///   overlapping fields only; `manual` keeps the server's values for them, unresolved.
///
/// An unknown entity is created from `data` (as a whole-document UPDATE would); a deleted one
/// follows delete wins (PROTOCOL §5), or is revived with the named fields over its last state
/// when the type allows resurrection or the node deleted it itself.
pub fn apply_field_change(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    rules: Option<&TypeRules>,
    strategy: Strategy,
    c: &FieldChange<'_>,
) -> Result<Result<Applied, ChangeRejection>, StoreError> {
    if let Err(r) = immutable_rule(rules, c.entity_type) {
        return Ok(Err(r));
    }
    if let Err(r) = entity_size_rule(c.data, ctx.max_entity_bytes) {
        return Ok(Err(r));
    }
    let base = c.base_version;
    let Some(e) = ctx.get(conn, c.entity_type, c.entity_uuid)? else {
        if base > 0 {
            return Ok(Err(version_ahead(base, 0)));
        }
        let seq = ctx.seq.take();
        ctx.put(
            conn,
            Entity {
                entity_type: c.entity_type.to_string(),
                entity_uuid: c.entity_uuid.to_string(),
                data: c.data.to_string(),
                version: 1,
                updated_at: c.updated_at.to_string(),
                is_deleted: false,
                author_node_id: Some(ctx.node_id.to_string()),
                holder_node_id: Some(ctx.node_id.to_string()),
                seq,
                created_seq: seq,
                change_id: Some(c.change_id.to_string()),
                applied_at: ctx.now.to_string(),
                field_versions: None,
                scope: None,
            },
        )?;
        return Ok(Ok(Applied::Done));
    };
    if e.change_id.as_deref() == Some(c.change_id)
        && e.author_node_id.as_deref() == Some(ctx.node_id)
    {
        return Ok(Ok(Applied::Done));
    }
    if base > e.version {
        return Ok(Err(version_ahead(base, e.version)));
    }
    let named: Vec<&str> = c.fields.iter().map(String::as_str).collect();
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "entity {}/{} holds {what} that is not a JSON object",
            e.entity_type, e.entity_uuid
        ))
    };
    // What the node asks for: the current state with every field it names.
    let wanted = fields::overlay(&e.data, c.data, &named).ok_or_else(|| corrupt("data"))?;
    if let Err(r) = entity_size_rule(&wanted, ctx.max_entity_bytes) {
        return Ok(Err(r));
    }

    if e.is_deleted {
        let resurrect = rules.map(|r| r.resurrect).unwrap_or(false);
        if resurrect || is_own(&e, ctx.node_id) {
            write_field_version(conn, ctx, &e, wanted, c)?;
            return Ok(Ok(Applied::Done));
        }
        let report = record_conflict(
            conn,
            ctx,
            &e,
            c.change_id,
            Some(ctx.node_id.to_string()),
            wanted,
            Resolution::new(WireStrategy::DeleteWins, Winner::Server),
        )?;
        requeue_for_node(conn, ctx, &e)?;
        return Ok(Ok(Applied::Conflict(report)));
    }

    let versions = FieldVersions::of(
        e.field_versions.as_deref(),
        e.version,
        e.author_node_id.as_deref(),
    )
    .map_err(|m| StoreError::Corrupt(format!("entity {}/{}: {m}", e.entity_type, e.entity_uuid)))?;
    let overlapping = versions.overlapping(c.fields, base, ctx.node_id);
    if overlapping.is_empty() {
        write_field_version(conn, ctx, &e, wanted, c)?;
        return Ok(Ok(Applied::Done));
    }

    // A conflict on the overlapping fields; "done wins" looks at those fields only.
    let priority: Option<std::collections::BTreeMap<String, Value>> = rules.map(|r| {
        r.priority_values
            .iter()
            .filter(|(k, _)| overlapping.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    if client_wins(strategy, c.updated_at, &e) {
        let report = record_conflict(
            conn,
            ctx,
            &e,
            c.change_id,
            e.author_node_id.clone(),
            e.data.clone(),
            Resolution::new(strategy.wire(), Winner::Client),
        )?;
        let data = merge_priority(&wanted, &e.data, priority.as_ref()).unwrap_or(wanted);
        write_field_version(conn, ctx, &e, data, c)?;
        return Ok(Ok(Applied::Conflict(report)));
    }

    let winner = if strategy == Strategy::Manual {
        Winner::Pending
    } else {
        Winner::Server
    };
    // The server keeps the overlapping fields; the node's other fields apply anyway.
    let kept = field_rules::without(c.fields, &overlapping);
    let mut data = fields::overlay(&e.data, c.data, &kept).ok_or_else(|| corrupt("data"))?;
    if strategy != Strategy::Manual {
        if let Some(merged) = merge_priority(&data, &wanted, priority.as_ref()) {
            data = merged;
        }
    }
    let report = record_conflict(
        conn,
        ctx,
        &e,
        c.change_id,
        Some(ctx.node_id.to_string()),
        wanted,
        Resolution::new(strategy.wire(), winner),
    )?;
    write_field_version(conn, ctx, &e, data, c)?;
    Ok(Ok(Applied::Conflict(report)))
}

/// Writes the outcome of a [`FieldChange`] as the entity's next version, authored by the node.
/// The node holds it only when it equals what the node sent; otherwise it is sent to the node
/// too (the echo rule). When nothing changes, no version is written, and the node is sent the
/// current state if its data differs from it.
fn write_field_version(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    e: &Entity,
    data: String,
    c: &FieldChange<'_>,
) -> StoreResult<()> {
    let holds = fields::same_object(&data, c.data);
    if !e.is_deleted && fields::same_object(&data, &e.data) {
        if !holds {
            requeue_for_node(conn, ctx, e)?;
        }
        return Ok(());
    }
    // When the result is what the node sent, the node's own text is the state: data sent by a
    // node is stored and forwarded byte for byte (key order, numbers), as without `fields`.
    let data = if holds { c.data.to_string() } else { data };
    let field_versions = field_versions_after(e, &data, Some(ctx.node_id))?;
    // The state holds the newest edit of each field, so its time is the later of the two.
    let updated_at = match (
        starsync_protocol::parse_ts(c.updated_at),
        starsync_protocol::parse_ts(&e.updated_at),
    ) {
        (Some(t), Some(o)) if o > t => e.updated_at.clone(),
        _ => c.updated_at.to_string(),
    };
    let node = Some(ctx.node_id.to_string());
    let seq = ctx.seq.take();
    ctx.put(
        conn,
        Entity {
            entity_type: e.entity_type.clone(),
            entity_uuid: e.entity_uuid.clone(),
            data,
            version: e.version + 1,
            updated_at,
            is_deleted: false,
            author_node_id: node.clone(),
            holder_node_id: if holds { node } else { None },
            seq,
            created_seq: e.created_seq,
            change_id: Some(c.change_id.to_string()),
            applied_at: ctx.now.to_string(),
            field_versions: Some(field_versions),
            scope: e.scope.clone(),
        },
    )
}

fn version_ahead(base: i64, server: i64) -> ChangeRejection {
    ChangeRejection::new(
        RejectReason::VersionAhead,
        format!(
            "base_version {base} is ahead of the server's version {server} for this entity; \
             the node must take the server state"
        ),
    )
}

/// Writes the node's change as the entity's new version, exactly as sent.
fn write_as_sent(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    e: &Entity,
    c: &Change,
    updated_at: String,
) -> StoreResult<()> {
    write_version(
        conn,
        ctx,
        e,
        c.data_text().to_string(),
        false,
        updated_at,
        Some(c),
    )
}

/// Writes a new version of an existing entity. `author` is the node's change (None: the hub).
#[allow(clippy::too_many_arguments)]
fn write_version(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    e: &Entity,
    data: String,
    deleted: bool,
    updated_at: String,
    author: Option<&Change>,
) -> StoreResult<()> {
    let seq = ctx.seq.take();
    let node = author.map(|_| ctx.node_id.to_string());
    // The fields this version changed came from the node's change, even when the version is
    // the hub's (a "done wins" merge): the node holds those values.
    let field_versions = if deleted {
        None
    } else {
        Some(field_versions_after(e, &data, Some(ctx.node_id))?)
    };
    ctx.put(
        conn,
        Entity {
            entity_type: e.entity_type.clone(),
            entity_uuid: e.entity_uuid.clone(),
            data,
            version: e.version + 1,
            updated_at,
            is_deleted: deleted,
            author_node_id: node.clone(),
            holder_node_id: node,
            seq,
            created_seq: e.created_seq,
            change_id: author.map(|c| c.change_id.clone()),
            applied_at: ctx.now.to_string(),
            field_versions,
            scope: e.scope.clone(),
        },
    )
}

/// `e`'s field versions once its next version holds `data` (PROTOCOL §5.1), the changed fields
/// stamped by `author` (None: the hub). A deletion or creation stores NULL instead.
pub fn field_versions_after(e: &Entity, data: &str, author: Option<&str>) -> StoreResult<String> {
    super::fields::next_field_versions(
        e.field_versions.as_deref(),
        e.version,
        e.author_node_id.as_deref(),
        &e.data,
        data,
        e.version + 1,
        author,
    )
    .map_err(|m| StoreError::Corrupt(format!("entity {}/{}: {m}", e.entity_type, e.entity_uuid)))
}

/// Whether `node` authored the entity's current version and holds exactly that state: then a
/// change it bases on an older version overwrites its own unacknowledged change, which is not
/// a conflict (PROTOCOL §5). A field merge authored by the node but holding other writers'
/// fields too (`holder_node_id` NULL) is not "own": a stale whole-document edit would
/// otherwise overwrite those fields unseen.
fn is_own(e: &Entity, node: &str) -> bool {
    e.author_node_id.as_deref() == Some(node) && e.holder_node_id.as_deref() == Some(node)
}

/// Whether the node's side wins a conflict under `strategy` (`timestamp_wins`: the newer
/// `updated_at`, tie to the server).
fn client_wins(strategy: Strategy, updated_at: &str, e: &Entity) -> bool {
    match strategy {
        Strategy::ServerWins | Strategy::Manual => false,
        Strategy::ClientWins => true,
        Strategy::TimestampWins => {
            let theirs = starsync_protocol::parse_ts(updated_at);
            let ours = starsync_protocol::parse_ts(&e.updated_at);
            matches!((theirs, ours), (Some(t), Some(o)) if t > o)
        }
    }
}

/// Node changes to a server-only (`immutable`) type are rejected.
fn immutable_rule(rules: Option<&TypeRules>, entity_type: &str) -> Result<(), ChangeRejection> {
    if rules.map(|r| r.immutable).unwrap_or(false) {
        return Err(ChangeRejection::new(
            RejectReason::ImmutableType,
            format!("entity type {entity_type} is server-only (immutable); nodes cannot change it"),
        ));
    }
    Ok(())
}

/// Sends the entity's current state to the node again (it lost a conflict).
fn requeue_for_node(conn: &mut Conn, ctx: &mut ApplyCtx<'_>, e: &Entity) -> StoreResult<()> {
    let seq = ctx.seq.take();
    ctx.requeued();
    queue::requeue(
        conn,
        &QueueRow {
            node_id: ctx.node_id.to_string(),
            entity_type: e.entity_type.clone(),
            entity_uuid: e.entity_uuid.clone(),
            seq,
            created_at: ctx.now.to_string(),
        },
    )
}

fn record_conflict(
    conn: &mut Conn,
    ctx: &mut ApplyCtx<'_>,
    e: &Entity,
    change_id: &str,
    source: Option<String>,
    stored: String,
    resolution: Resolution,
) -> StoreResult<ConflictReport> {
    let id = uuid::Uuid::new_v4().to_string();
    let automatic = resolution.is_automatic();
    history::insert(
        conn,
        &HistoryRow {
            id: id.clone(),
            seq: ctx.seq.take(),
            entity_uuid: e.entity_uuid.clone(),
            entity_type: e.entity_type.clone(),
            source_node_id: source,
            node_id: Some(ctx.node_id.to_string()),
            change_id: Some(change_id.to_string()),
            arrival_time: ctx.now.to_string(),
            serialized_data: stored,
            conflict_resolution: resolution.to_string(),
            server_version: e.version,
            resolved_at: automatic.then(|| ctx.now.to_string()),
            resolved_by: automatic.then(|| "auto".to_string()),
        },
    )?;
    Ok(ConflictReport {
        conflict_id: id,
        entity_type: e.entity_type.clone(),
        entity_uuid: e.entity_uuid.clone(),
        resolution: resolution.strategy,
        server_version: e.version,
        conflict_resolution: resolution,
        change_id: change_id.to_string(),
    })
}

/// "Done wins": for each priority field, when the loser has the value and the winner does
/// not, the winner's data takes it. Returns the merged JSON only when it differs from `winner`.
///
/// Works on the objects' fields as JSON text, in their order: every value keeps its exact
/// text (a number is never rewritten); only the priority field changes.
pub fn merge_priority(
    winner: &str,
    loser: &str,
    priority: Option<&std::collections::BTreeMap<String, Value>>,
) -> Option<String> {
    let priority = priority.filter(|p| !p.is_empty())?;
    let mut w = object_fields(winner)?;
    let l = object_fields(loser)?;
    let holds = |fields: &[(String, Box<RawValue>)], field: &str, value: &Value| {
        fields
            .iter()
            .find(|(k, _)| k == field)
            .and_then(|(_, v)| serde_json::from_str::<Value>(v.get()).ok())
            .as_ref()
            == Some(value)
    };
    let mut changed = false;
    for (field, value) in priority {
        if holds(&w, field, value) || !holds(&l, field, value) {
            continue;
        }
        let Some((_, raw)) = l.iter().find(|(k, _)| k == field) else {
            continue;
        };
        match w.iter_mut().find(|(k, _)| k == field) {
            Some(slot) => slot.1 = raw.clone(),
            None => w.push((field.clone(), raw.clone())),
        }
        changed = true;
    }
    changed.then(|| {
        let mut out = String::from("{");
        for (i, (k, v)) in w.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::from(k.as_str()).to_string());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        out
    })
}

/// The fields of a JSON object as (key, value text), in order; None when it is not an object.
pub(crate) fn object_fields(text: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct Fields;
    impl<'de> serde::de::Visitor<'de> for Fields {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    use serde::Deserializer;
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Fields)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_wins_only_when_the_loser_has_it() {
        let mut p = std::collections::BTreeMap::new();
        p.insert("status".to_string(), Value::from("done"));
        let merged = merge_priority(
            r#"{"status":"open","n":1}"#,
            r#"{"status":"done","n":2}"#,
            Some(&p),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["status"], "done");
        assert_eq!(v["n"], 1);
        assert!(merge_priority(r#"{"status":"done"}"#, r#"{"status":"open"}"#, Some(&p)).is_none());
        assert!(merge_priority(r#"{"status":"open"}"#, r#"{"status":"open"}"#, Some(&p)).is_none());
    }

    #[test]
    fn a_merge_keeps_every_other_value_as_written() {
        let mut p = std::collections::BTreeMap::new();
        p.insert("status".to_string(), Value::from("done"));
        let merged = merge_priority(
            r#"{"z":18446744073709551616,"status":"open","a":1E5,"b":-0}"#,
            r#"{"status":"done","n":2}"#,
            Some(&p),
        )
        .unwrap();
        assert_eq!(
            merged,
            r#"{"z":18446744073709551616,"status":"done","a":1E5,"b":-0}"#
        );
        let added = merge_priority(r#"{"n":1.0}"#, r#"{"status" : "done"}"#, Some(&p)).unwrap();
        assert_eq!(added, r#"{"n":1.0,"status":"done"}"#);
    }
}
