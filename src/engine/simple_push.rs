//! Simple push (PROTOCOL §11.4): a client's local change-queue rows, applied as the node's
//! changes through [`Engine::apply_node_change_as`], with last writer wins by time.
//!
//! The translation: `CREATE`/`UPDATE`/`DELETE` are `INSERT`/`UPDATE`/`DELETE`, `timestamp` is
//! `updated_at`, the row's `id` is the `change_id` (so history rows and reports name it) and
//! the idempotency key (`push_rows`). Last writer wins by time whatever the type's strategy:
//! the change is based on the current version when the row is not older than the entity's
//! `updated_at` (no conflict: it is applied), and on the version before it when it is older
//! (a conflict that `timestamp_wins` settles for the server: the row lands in history), with
//! [`ApplyCtx::strict_base`] so that the node's own earlier rows are no exception. Deletes follow
//! §5 as they are: an UPDATE of a deleted entity loses (`delete_wins`), a DELETE always wins.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::apply::Applied;
use super::live::AdminEvent;
use super::{Engine, EngineError, EngineResult};
use crate::config::Strategy;
use crate::store::models::Node;
use crate::store::push;
use starsync_protocol::api::{ChangeError, ConflictReport};
use starsync_protocol::{
    echo_field, validate_change, Change, ChangeRejection, ClockRule, ErrorCode, RejectReason,
    ValidChange,
};

/// Most rows in one push (413 `too_many_changes` beyond): one push is one transaction, and a
/// client's queue is sent in batches anyway. The same bound as delta sync's.
pub const MAX_PUSH_ROWS: usize = 500;

/// The largest epoch-milliseconds `timestamp` (JavaScript's exact integers).
const MAX_MILLIS: i64 = (1 << 53) - 1;

/// The body of `POST /api/sync/push`. A body whose shape is wrong (no `changes` list, a row
/// that is not an object or lacks a string `id`, `entity_type`, `entity_id` or `action`) is
/// 422 and nothing is applied; a row that breaks a rule of the data is rejected on its own
/// (in `errors`).
#[derive(Debug, Deserialize)]
pub struct PushRequest {
    pub changes: Vec<PushRow>,
}

/// One change-queue row, as the client keeps it.
#[derive(Debug, Deserialize)]
pub struct PushRow {
    /// The row's id: the idempotency key, unique per node.
    pub id: String,
    pub entity_id: String,
    pub entity_type: String,
    /// `CREATE`, `UPDATE` or `DELETE` (any case).
    pub action: String,
    /// The entity's new state (ignored for `DELETE`).
    #[serde(default)]
    pub payload: Option<Box<RawValue>>,
    /// When the client made the change: RFC 3339 / ISO 8601 with an offset or `Z`, or epoch
    /// milliseconds.
    #[serde(default)]
    pub timestamp: Option<Value>,
}

/// What a push did: every row is applied (`applied`, conflicts included), a duplicate, or
/// rejected (`errors`).
#[derive(Debug, Default)]
pub struct PushReport {
    pub applied: u64,
    pub duplicates: u64,
    pub conflicts: Vec<ConflictReport>,
    pub errors: Vec<ChangeError>,
}

/// A row's `timestamp` as a normalized `updated_at`.
fn row_time(t: Option<&Value>) -> Result<String, ChangeRejection> {
    let bad = |what: String| {
        ChangeRejection::new(
            RejectReason::InvalidUpdatedAt,
            format!(
                "timestamp {what} is not an ISO 8601 time with an offset or Z \
                 (2026-12-03T08:00:00Z) nor epoch milliseconds from 0 to {MAX_MILLIS}"
            ),
        )
    };
    match t {
        Some(Value::String(s)) => starsync_protocol::parse_ts(s)
            .map(starsync_protocol::format_ts)
            .ok_or_else(|| bad(format!("{:?}", echo_field(s)))),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|ms| (0..=MAX_MILLIS).contains(ms))
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(starsync_protocol::format_ts)
            .ok_or_else(|| bad(n.to_string())),
        None | Some(Value::Null) => Err(bad("(missing)".into())),
        Some(other) => Err(bad(echo_field(&other.to_string()))),
    }
}

/// The packet operation of a row's `action`.
fn operation(action: &str) -> Result<&'static str, ChangeRejection> {
    match action.to_ascii_uppercase().as_str() {
        "CREATE" => Ok("INSERT"),
        "UPDATE" => Ok("UPDATE"),
        "DELETE" => Ok("DELETE"),
        _ => Err(ChangeRejection::new(
            RejectReason::UnknownOperation,
            format!(
                "action {:?} is not CREATE, UPDATE or DELETE",
                echo_field(action)
            ),
        )),
    }
}

/// The engine change a row stands for, before its base version is known.
fn to_change(row: &PushRow) -> Result<Change, ChangeRejection> {
    let op = operation(&row.action)?;
    let updated_at = row_time(row.timestamp.as_ref())?;
    Ok(Change {
        change_id: row.id.clone(),
        entity_type: row.entity_type.clone(),
        entity_uuid: row.entity_id.clone(),
        operation: op.into(),
        base_version: Some(0),
        version: None,
        updated_at,
        data: if op == "DELETE" {
            None
        } else {
            row.payload.clone()
        },
        fields: None,
    })
}

impl Engine {
    /// Applies a simple push as the node's changes, in order, in one transaction
    /// (PROTOCOL §11.4). Each row is applied, reported as a conflict (applied, and lost or
    /// won), counted as a duplicate, or rejected on its own; only a malformed or oversized
    /// request fails whole.
    pub fn simple_push(&self, node: &Node, request: PushRequest) -> EngineResult<PushReport> {
        let rows = request.changes;
        if rows.len() > MAX_PUSH_ROWS {
            return Err(EngineError::TooManyChanges(format!(
                "a push carries at most {MAX_PUSH_ROWS} rows, this one {}: send the queue in \
                 batches",
                rows.len()
            )));
        }
        let now = starsync_protocol::now_ts();
        let clock = ClockRule::now(self.settings.sync.max_clock_skew_secs);
        // Every rule that needs no database first, so only valid values reach a query.
        let checked: Vec<Result<(Change, ValidChange), ChangeRejection>> = rows
            .iter()
            .map(|r| {
                let c = to_change(r)?;
                let v = validate_change(&c, &clock)?;
                Ok((c, v))
            })
            .collect();
        let report = self.apply_once_or_isolated(|isolate| {
            self.write_sequenced(|conn, seq| {
                let view = self.view(conn, node)?;
                let mut ctx = self.node_ctx(&node.id, &now, seq);
                ctx.strict_base = true;
                let valid_ids: Vec<&str> = checked
                    .iter()
                    .filter_map(|c| c.as_ref().ok())
                    .map(|(c, _)| c.change_id.as_str())
                    .collect();
                let mut seen = push::seen(conn, &node.id, &valid_ids)?;
                ctx.preload(
                    conn,
                    checked
                        .iter()
                        .filter_map(|c| c.as_ref().ok())
                        .map(|(c, _)| (c.entity_type.as_str(), c.entity_uuid.as_str())),
                )?;
                let mut report = PushReport::default();
                for (row, checked) in rows.iter().zip(&checked) {
                    let rejected = |r: ChangeRejection| ChangeError {
                        change_id: echo_field(&row.id),
                        entity_type: echo_field(&row.entity_type),
                        entity_uuid: echo_field(&row.entity_id),
                        error: ErrorCode::InvalidChange,
                        reason: r.reason,
                        message: r.message,
                    };
                    let (mut change, valid) = match checked {
                        Ok((c, v)) => (c.clone(), v),
                        Err(r) => {
                            report.errors.push(rejected(r.clone()));
                            continue;
                        }
                    };
                    if seen.contains(&row.id) {
                        report.duplicates += 1;
                        continue;
                    }
                    // Last writer by time: a row not older than the current state is based on
                    // it; an older one on the version before, so it conflicts and loses.
                    let base = match ctx.current(conn, &change.entity_type, &change.entity_uuid)? {
                        None => 0,
                        Some(e) => {
                            let older = match (
                                starsync_protocol::parse_ts(&valid.updated_at),
                                starsync_protocol::parse_ts(&e.updated_at),
                            ) {
                                (Some(t), Some(o)) => t < o,
                                _ => false,
                            };
                            if older {
                                e.version - 1
                            } else {
                                e.version
                            }
                        }
                    };
                    change.base_version = Some(base.max(0) as u64);
                    let applied = self.apply_node_change_as(
                        conn,
                        &mut ctx,
                        &view,
                        &change,
                        valid,
                        Strategy::TimestampWins,
                        isolate,
                    )?;
                    match applied {
                        Ok(outcome) => {
                            report.applied += 1;
                            if let Applied::Conflict(c) = outcome {
                                report.conflicts.push(c);
                            }
                            push::record(
                                conn,
                                &node.id,
                                &row.id,
                                &row.entity_type,
                                &row.entity_id,
                                &now,
                            )?;
                            seen.insert(row.id.clone());
                        }
                        Err(r) => report.errors.push(rejected(r)),
                    }
                }
                ctx.flush(conn)?;
                drop(ctx);
                let events = report
                    .conflicts
                    .iter()
                    .map(|c| AdminEvent::conflict(node, c))
                    .collect();
                Ok((report, events))
            })
        })?;
        tracing::info!(
            node = %node.code,
            rows = rows.len(),
            applied = report.applied,
            duplicates = report.duplicates,
            conflicts = report.conflicts.len(),
            errors = report.errors.len(),
            "simple push"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            row_time(Some(&Value::from("2026-12-03T08:00:00+01:00"))).unwrap(),
            "2026-12-03T07:00:00.000000Z"
        );
        assert_eq!(
            row_time(Some(&Value::from(1_764_748_800_123_i64))).unwrap(),
            "2025-12-03T08:00:00.123000Z"
        );
        for bad in [
            Value::from("yesterday"),
            Value::from(-1),
            Value::from(1.5),
            Value::Bool(true),
            Value::Null,
        ] {
            assert!(row_time(Some(&bad)).is_err(), "{bad}");
        }
        assert!(row_time(None).is_err());
    }

    #[test]
    fn actions() {
        assert_eq!(operation("CREATE").unwrap(), "INSERT");
        assert_eq!(operation("update").unwrap(), "UPDATE");
        assert!(operation("UPSERT").is_err());
    }
}
