//! Cursors (PROTOCOL §11 "cursor") and the change log read in commit order, shared by the
//! change feed (§11.3) and delta sync's `server_changes` (§11.2).
//!
//! A cursor is a point of the hub's log: a sequence number. Where a protocol speaks of times,
//! the hub hands out ISO 8601 times stored in `time_cursors` with the sequence number each
//! stands for, so a time it handed out resolves to its point exactly, and a time it never
//! handed out means "changes committed after that instant", resolved conservatively.
//! docs/design.md ("Time cursors") explains why this never skips a change.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use super::watermelon::MAX_CURSOR;
use super::{Engine, EngineError, EngineResult};
use crate::store::cursor::{self as store, LogFilter};
use crate::store::models::Entity;
use crate::store::pending::View;
use crate::store::scopes::GLOBAL;
use crate::store::{entities, Conn, StoreResult};

/// How far before an instant the client names the log is read again: an entity's
/// `applied_at` is stamped when its write starts, before the commit, and several server
/// processes' clocks may differ. Changes stamped up to this long before the instant are sent
/// again (repeats are harmless: every record carries its version); none committed after the
/// instant is skipped.
pub const INSTANT_MARGIN_SECS: i64 = 60;

/// The format of handed-out times: RFC 3339, UTC, nanoseconds, fixed width (they sort as text,
/// and two times can be told apart between two microsecond-stamped commits).
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.9fZ";

fn format_time(t: DateTime<Utc>) -> String {
    t.format(TIME_FORMAT).to_string()
}

/// A `since` (or `last_sync_at`) as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// A number: the sequence number itself (1 to 2^53 − 1).
    Seq(i64),
    /// An ISO 8601 time, as sent (a handed-out one is looked up by its exact text first).
    Time(String),
}

impl Since {
    /// Reads a cursor: a whole number from 1 to 2^53 − 1, or an RFC 3339 time.
    pub fn parse(raw: &str) -> EngineResult<Since> {
        let s = raw.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_CURSOR).contains(n))
                .map(Since::Seq)
                .ok_or_else(|| bad_since(s));
        }
        if starsync_protocol::parse_ts(s).is_none() {
            return Err(bad_since(s));
        }
        Ok(Since::Time(s.to_string()))
    }

    /// As the answer echoes it: a number stays a number.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Since::Seq(n) => serde_json::Value::from(*n),
            Since::Time(t) => serde_json::Value::from(t.as_str()),
        }
    }
}

fn bad_since(s: &str) -> EngineError {
    EngineError::InvalidRequest(format!(
        "cursor {:?} is neither a whole number from 1 to {MAX_CURSOR} nor an RFC 3339 time \
         (e.g. 2026-12-03T10:00:00Z)",
        s.chars().take(60).collect::<String>()
    ))
}

/// The sequence number a cursor stands for, read on the snapshot that will serve the answer
/// (`upto` is its last sequence number; `exit_scopes` the scopes whose exits the reader is
/// told about).
///
/// A number is the point itself (ahead of the log: 422). A handed-out time is its point. Any
/// other time `T` is the point just before the oldest log entry stamped after `T − margin`
/// ([`INSTANT_MARGIN_SECS`]), or the end of the log when there is none.
pub fn resolve(
    conn: &mut Conn,
    since: &Since,
    upto: i64,
    exit_scopes: &[String],
) -> EngineResult<i64> {
    match since {
        Since::Seq(n) if *n > upto => Err(EngineError::InvalidRequest(format!(
            "cursor {n} is ahead of this server's log (last change {upto}); start over without \
             a cursor"
        ))),
        Since::Seq(n) => Ok(*n),
        Since::Time(text) => {
            if let Some(seq) = store::seq_of(conn, text)? {
                return Ok(seq);
            }
            let t = starsync_protocol::parse_ts(text).ok_or_else(|| bad_since(text))?;
            // The same instant written another way (another offset, fewer digits).
            if let Some(seq) = store::seq_of(conn, &format_time(t))? {
                return Ok(seq);
            }
            let from = t - Duration::seconds(INSTANT_MARGIN_SECS);
            let stamp = starsync_protocol::format_ts(from);
            let scopes = (!exit_scopes.is_empty()).then_some(exit_scopes);
            Ok(match store::first_stamped_after(conn, &stamp, scopes)? {
                Some(first) => (first - 1).clamp(0, upto),
                None => upto,
            })
        }
    }
}

/// Hands out the time of log point `seq`, inside a write transaction (under the writer lock,
/// so two processes never interleave here). Returns the time and the point it stands for.
///
/// A point that has a time keeps it. Otherwise the new time lies strictly between the times of
/// the neighbouring points (times and points grow together): the current time when `seq` is
/// past every point handed out (later than the last time), else one nanosecond after the time
/// below. Should no time fit between (two neighbours one nanosecond apart), the point below is
/// handed out instead: a reader then gets a few changes again, never misses one.
pub fn hand_out(conn: &mut Conn, seq: i64) -> StoreResult<(String, i64)> {
    if let Some(at) = store::time_of(conn, seq)? {
        return Ok((at, seq));
    }
    let store::Neighbours { below, above } = store::neighbours(conn, seq)?;
    let floor = below
        .as_ref()
        .and_then(|(at, _)| starsync_protocol::parse_ts(at))
        .map(|t| t + Duration::nanoseconds(1));
    let now = Utc::now();
    let candidate = match (&above, floor) {
        (None, Some(f)) => now.max(f),
        (None, None) => now,
        (Some(_), Some(f)) => f,
        (Some(a), None) => match starsync_protocol::parse_ts(a) {
            Some(a) => now.min(a - Duration::nanoseconds(1)),
            None => now,
        },
    };
    let text = format_time(candidate);
    let fits = above.as_deref().is_none_or(|a| text.as_str() < a)
        && below
            .as_ref()
            .is_none_or(|(b, _)| b.as_str() < text.as_str());
    if !fits {
        if let Some((at, s)) = below {
            return Ok((at, s));
        }
    }
    store::insert(conn, &text, seq)?;
    Ok((text, seq))
}

/// One entry of a page of the log, in log order.
#[derive(Debug)]
pub enum Item {
    /// The entity's current state (a tombstone when `is_deleted`).
    State(Box<Entity>),
    /// The entity left the reader's scopes: told as a deletion, without data.
    Left {
        entity_type: String,
        entity_uuid: String,
        seq: i64,
    },
}

impl Item {
    pub fn seq(&self) -> i64 {
        match self {
            Item::State(e) => e.seq,
            Item::Left { seq, .. } => *seq,
        }
    }
}

/// A page of the log: its entries, whether more follow, and the point it ends at (the last
/// entry's when more follow, the end of the snapshot otherwise).
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Item>,
    pub has_more: bool,
    pub end: i64,
}

/// What a reader of the log sees, and from where.
pub struct LogRead<'a> {
    /// The node's view (None: a hub without scopes, everything).
    pub view: Option<&'a View>,
    /// The types asked for (None: every type the view has).
    pub types: Option<&'a BTreeSet<String>>,
    /// The point after which to read (None: every live entity, no deletions).
    pub since: Option<i64>,
    /// The snapshot's last sequence number.
    pub upto: i64,
    pub limit: usize,
}

impl LogRead<'_> {
    /// The filter written in SQL: the asked types within the view's, the view's scopes.
    fn filter(&self) -> LogFilter {
        let view_types = self.view.and_then(|v| v.type_list());
        let types = match (self.types, view_types) {
            (None, None) => None,
            (Some(asked), None) => Some(asked.iter().cloned().collect()),
            (None, Some(vt)) => Some(vt),
            (Some(asked), Some(vt)) => Some(vt.into_iter().filter(|t| asked.contains(t)).collect()),
        };
        let scopes = self
            .view
            .filter(|v| !v.all)
            .map(|v| v.streams.iter().filter_map(|s| s.scope.clone()).collect());
        LogFilter { types, scopes }
    }

    /// The scopes whose exits are told as deletions: the view's own, global aside (a global
    /// type's entities never change scope); none for a view of every scope.
    pub fn exit_scopes(&self) -> Vec<String> {
        match self.view {
            Some(v) if !v.all => v
                .streams
                .iter()
                .filter_map(|s| s.scope.clone())
                .filter(|s| s != GLOBAL)
                .collect(),
            _ => Vec::new(),
        }
    }

    fn sees(&self, entity_type: &str, scope: Option<&str>) -> bool {
        self.types.is_none_or(|t| t.contains(entity_type))
            && self.view.is_none_or(|v| v.sees(entity_type, scope))
    }

    /// Reads one page: the entities changed after `since` (their states, tombstones included),
    /// merged in log order with the exits from the reader's scopes of entities it no longer
    /// sees; `skip` leaves entries out without ending the page (delta sync's own changes).
    ///
    /// Both sources are read in chunks from the snapshot, up to the lower of their last read
    /// points, so the merge never passes an entry of either. One entry beyond `limit` is looked
    /// for, to tell `has_more`.
    pub fn page(&self, conn: &mut Conn, skip: &dyn Fn(&Entity) -> bool) -> StoreResult<Page> {
        let filter = self.filter();
        let exit_scopes = match self.since {
            Some(_) => self.exit_scopes(),
            None => Vec::new(),
        };
        let chunk = self.limit as i64 + 1;
        let live_only = self.since.is_none();
        let mut pos = self.since.unwrap_or(0);
        let mut items: Vec<Item> = Vec::new();
        loop {
            let logs = if filter.types.as_ref().is_some_and(Vec::is_empty) {
                Vec::new()
            } else {
                store::log_page(conn, &filter, pos, self.upto, live_only, chunk)?
            };
            let exits = store::exits_page(conn, &exit_scopes, pos, self.upto, chunk)?;
            // Entries up to `horizon` are all in hand from both sources.
            let mut horizon = self.upto;
            if logs.len() as i64 == chunk {
                horizon = horizon.min(logs.last().map_or(self.upto, |e| e.seq));
            }
            if exits.len() as i64 == chunk {
                horizon = horizon.min(exits.last().map_or(self.upto, |x| x.seq));
            }
            let mut logs = logs.into_iter().filter(|e| e.seq <= horizon).peekable();
            let mut exits = exits.into_iter().filter(|x| x.seq <= horizon).peekable();
            loop {
                let take_log = match (logs.peek(), exits.peek()) {
                    (None, None) => break,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(e), Some(x)) => e.seq <= x.seq,
                };
                let item = if take_log {
                    let Some(e) = logs.next() else { break };
                    if !self.sees(&e.entity_type, e.scope.as_deref()) || skip(&e) {
                        continue;
                    }
                    Item::State(Box::new(e))
                } else {
                    let Some(x) = exits.next() else { break };
                    if self.types.is_some_and(|t| !t.contains(&x.entity_type))
                        || self.view.is_some_and(|v| !v.sees_type(&x.entity_type))
                    {
                        continue;
                    }
                    let Some(e) = entities::get(conn, &x.entity_type, &x.entity_uuid)? else {
                        continue;
                    };
                    // Still in view: its state is in the log. Leaving again later: told then.
                    if self.sees(&e.entity_type, e.scope.as_deref())
                        || store::exits_again(
                            conn,
                            &x.entity_type,
                            &x.entity_uuid,
                            &exit_scopes,
                            x.seq,
                            self.upto,
                        )?
                    {
                        continue;
                    }
                    Item::Left {
                        entity_type: x.entity_type,
                        entity_uuid: x.entity_uuid,
                        seq: x.seq,
                    }
                };
                if items.len() == self.limit {
                    let end = items.last().map_or(pos, Item::seq);
                    return Ok(Page {
                        items,
                        has_more: true,
                        end,
                    });
                }
                items.push(item);
            }
            if horizon >= self.upto {
                return Ok(Page {
                    items,
                    has_more: false,
                    end: self.upto,
                });
            }
            pos = horizon;
        }
    }
}

impl Engine {
    /// Hands out the time of log point `seq` (see [`hand_out`]) and notes the read in the
    /// node's status (`last_sync_out`), in one write transaction.
    pub(crate) fn hand_out_time(&self, node_id: &str, seq: i64) -> EngineResult<(String, i64)> {
        let now = starsync_protocol::now_ts();
        self.write(|conn| {
            let handed = hand_out(conn, seq)?;
            crate::store::watermelon::note_sync(conn, node_id, false, &now)?;
            Ok(handed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cursors() {
        assert_eq!(Since::parse("42").unwrap(), Since::Seq(42));
        assert_eq!(
            Since::parse("9007199254740991").unwrap(),
            Since::Seq(MAX_CURSOR)
        );
        for bad in [
            "0",
            "9007199254740992",
            "-1",
            "1.5",
            "abc",
            "2026-13-01T00:00:00Z",
            "",
        ] {
            assert!(Since::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Since::parse("2026-12-03T10:00:00+01:00").unwrap(),
            Since::Time("2026-12-03T10:00:00+01:00".into())
        );
    }

    #[test]
    fn times_sort_as_text() {
        let a = format_time(starsync_protocol::parse_ts("2026-12-03T10:00:00Z").unwrap());
        let b = format_time(
            starsync_protocol::parse_ts("2026-12-03T10:00:00Z").unwrap() + Duration::nanoseconds(1),
        );
        assert_eq!(a, "2026-12-03T10:00:00.000000000Z");
        assert!(a < b);
    }
}
