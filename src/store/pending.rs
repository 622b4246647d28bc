//! The pending-queue rule: which entities wait in a node's queue (PROTOCOL §3–4). The rule is
//! stated once, here; below it are the three ways the server has to write it, each for a
//! different cost.
//!
//! # The rule
//!
//! The change log is `entities`: one row per entity, holding its current state and `seq`, the
//! global sequence number of its latest change (docs/design.md, "The queue"). For a node N let
//!
//! - `c` be N's cursor (`sync_nodes.acked_seq`): every log entry with `seq ≤ c` is done for N,
//!   because N acknowledged a packet built after it;
//! - `r` be N's registration point (`sync_nodes.registered_seq`): the highest sequence number
//!   handed out when N registered.
//!
//! A log entry `e` is **pending for N in the log** when all three hold:
//!
//! 1. `e.seq > c` — N has not acknowledged this state (a newer change of the entity gets a new,
//!    higher `seq`, so it is pending again even if an older state was acknowledged);
//! 2. `e.holder ≠ N` — N does not already hold exactly this state (PROTOCOL's echo rule; the
//!    holder is the author of a change applied as sent, NULL — nobody — when the stored state
//!    differs from what anyone sent);
//! 3. `e.deleted ⇒ e.seq > r` — a tombstone only goes to nodes that existed when it was
//!    written: a node registered later never had the entity, so its deletion is nothing to it.
//!
//! **N's queue** is those entries plus N's own `sync_changes` rows with `seq > c` (a state the
//! log does not give back, e.g. the server's state re-sent to N after N lost a conflict), one
//! entry per entity: an entity pending both ways is counted once. `pending_changes` is the
//! number of entities in N's queue, which is what N receives if it drains its queue while
//! nothing changes.
//!
//! # Three encodings, one rule
//!
//! - [`log_entries`] and [`count_in_log`] write the log part as a SQL filter, so the database
//!   picks the rows by the `seq` index and only one packet's worth travels (building a packet,
//!   one node's status).
//! - [`in_log`] writes it as a predicate on one entity already in memory, so checking one
//!   queue row costs no query beyond the primary-key read of its entity.
//! - [`counts_in_log`] writes it as a counting formula over sorted sequence lists, so the counts
//!   of every node come from one pass over the log instead of one scan per node.
//!
//! A change to the rule must change all three. `tests/api/pending_counts.rs` checks, on random
//! logs, that they agree with each other and with what every node actually receives.

use std::collections::HashMap;

use diesel::prelude::*;

use super::models::{Entity, Node};
use super::schema::entities::dsl as e;
use super::{entities, queue, Conn, StoreResult};

/// The rule (conditions 1–3), written as a SQL filter for the database to evaluate by index.
///
/// A macro rather than a function: the filter's diesel type is long and changes with every
/// edit, and both [`log_entries`] and [`count_in_log`] need the same expression. The holder test
/// spells out `IS NULL OR <>`, because in SQL `NULL <> N` is NULL, not true.
macro_rules! in_log_filter {
    ($node_id:expr, $cursor:expr, $registered_seq:expr) => {
        e::seq
            .gt($cursor)
            .and(
                e::holder_node_id
                    .is_null()
                    .or(e::holder_node_id.ne($node_id)),
            )
            .and(e::is_deleted.eq(false).or(e::seq.gt($registered_seq)))
    };
}

/// N's pending log entries, oldest first, at most `limit`: the rule written as SQL, for
/// building a packet, which needs one page of whole rows from a log of any length.
pub fn log_entries(conn: &mut Conn, n: &Node, limit: i64) -> StoreResult<Vec<Entity>> {
    Ok(e::entities
        .filter(in_log_filter!(&n.id, n.acked_seq, n.registered_seq))
        .order(e::seq.asc())
        .limit(limit)
        .load(conn)?)
}

/// [`log_entries`] without the data: the same entries with their data sizes
/// ([`entities::Head`]), so an answer is cut to its byte budget before any large entity is
/// loaded.
pub fn log_heads(conn: &mut Conn, n: &Node, limit: i64) -> StoreResult<Vec<entities::Head>> {
    Ok(e::entities
        .filter(in_log_filter!(&n.id, n.acked_seq, n.registered_seq))
        .order(e::seq.asc())
        .select(entities::head_columns!())
        .limit(limit)
        .load(conn)?)
}

/// How many log entries are pending for N: the rule written as a SQL `COUNT`, for one node's
/// status, where the database counts from N's cursor without sending any row.
pub fn count_in_log(conn: &mut Conn, n: &Node) -> StoreResult<i64> {
    Ok(e::entities
        .filter(in_log_filter!(&n.id, n.acked_seq, n.registered_seq))
        .count()
        .get_result(conn)?)
}

/// True when the log alone makes `ent` pending for N: the rule written as a predicate on a row
/// already in memory, for checking N's few `sync_changes` rows without a query each.
pub fn in_log(ent: &Entity, n: &Node) -> bool {
    ent.seq > n.acked_seq
        && ent.holder_node_id.as_deref() != Some(n.id.as_str())
        && (!ent.is_deleted || ent.seq > n.registered_seq)
}

/// How many log entries are pending for each of `nodes`: the rule written as a counting
/// formula, for the hub's statistics and the node list, which need every node's count at once.
///
/// Why: counting per node scans the log from each node's cursor, so an operator listing 1,000
/// nodes that are all 100,000 changes behind waited 53 s. Here the log is streamed once (in
/// `seq` order, bounded pages) into sorted sequence lists, and each node's count is four binary
/// searches. Conditions 1–3 for node N, by inclusion–exclusion (the last term adds back the
/// entries that both subtracted terms removed):
///
/// `|seq > c| − |held by N, seq > c| − |deleted, c < seq ≤ r| + |deleted and held by N, c < seq ≤ r|`.
pub fn counts_in_log(conn: &mut Conn, nodes: &[Node]) -> StoreResult<HashMap<String, i64>> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut all = Vec::new();
    let mut deleted = Vec::new();
    let mut held = vec![Vec::new(); nodes.len()];
    let mut held_deleted = vec![Vec::new(); nodes.len()];
    let mut after = i64::MIN;
    loop {
        let page = log_page(conn, after, 50_000)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (seq, holder, is_deleted) in page {
            all.push(seq);
            if is_deleted {
                deleted.push(seq);
            }
            if let Some(i) = holder.as_deref().and_then(|h| index.get(h)) {
                held[*i].push(seq);
                if is_deleted {
                    held_deleted[*i].push(seq);
                }
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
    let mut out = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let (cur, reg) = (n.acked_seq, n.registered_seq);
        let in_log = above(&all, cur) - above(&held[i], cur) - between(&deleted, cur, reg)
            + between(&held_deleted[i], cur, reg);
        out.insert(n.id.clone(), in_log);
    }
    Ok(out)
}

/// One change-log entry as [`counts_in_log`] needs it: (seq, holder, deleted).
type LogEntry = (i64, Option<String>, bool);

/// The change log in `seq` order after `after_seq`, at most `limit` entries (keyset paging, so
/// [`counts_in_log`] streams a large log in bounded memory).
fn log_page(conn: &mut Conn, after_seq: i64, limit: i64) -> StoreResult<Vec<LogEntry>> {
    Ok(e::entities
        .filter(e::seq.gt(after_seq))
        .order(e::seq.asc())
        .select((e::seq, e::holder_node_id, e::is_deleted))
        .limit(limit)
        .load(conn)?)
}

/// `pending_changes` of one node (its status): the log part counted by SQL, plus its queue rows
/// not already pending through the log.
pub fn count(conn: &mut Conn, n: &Node) -> StoreResult<i64> {
    Ok(count_in_log(conn, n)? + extra(conn, n)?)
}

/// `pending_changes` of many nodes (hub statistics, node list): the log part in one pass, plus
/// each node's queue rows not already pending through the log.
pub fn counts(conn: &mut Conn, nodes: &[Node]) -> StoreResult<HashMap<String, i64>> {
    let mut out = counts_in_log(conn, nodes)?;
    for n in nodes {
        let more = extra(conn, n)?;
        *out.entry(n.id.clone()).or_insert(0) += more;
    }
    Ok(out)
}

/// N's own queue rows whose entity is not already pending through the log (or no longer
/// exists), so an entity pending both ways counts once.
fn extra(conn: &mut Conn, n: &Node) -> StoreResult<i64> {
    let mut extra = 0;
    for r in queue::pending(conn, &n.id, n.acked_seq, i64::MAX)? {
        match entities::get(conn, &r.entity_type, &r.entity_uuid)? {
            Some(ent) if in_log(&ent, n) => {}
            _ => extra += 1,
        }
    }
    Ok(extra)
}
