//! Delta sync, `POST /api/sync/delta` (PROTOCOL §11.2): a client's changes applied as the
//! node's changes ([`Engine::apply_node_change`], the rules every protocol shares), then the
//! changes since its `last_sync_at` read from the log ([`LogRead`]), in one write transaction.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::apply::{object_fields, Applied, SeqAlloc};
use super::cursor::{hand_out, resolve, Item, LogRead, Since};
use super::{Engine, EngineError, EngineResult};
use crate::store::models::Node;
use crate::store::pending::View;
use crate::store::{self, Conn};
use starsync_protocol::{
    validate_change, Change, ChangeRejection, ClockRule, ErrorCode, RejectReason, Resolution,
    Winner,
};

/// Most changes in one request (PROTOCOL §11.2): more answer 413 `too_many_changes`.
pub const MAX_CHANGES: usize = 500;

/// Longest `device_id` kept (characters).
const MAX_DEVICE_CHARS: usize = 128;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct DeltaRequest {
    /// The `last_sync_at` of the last answer (an ISO time, or a cursor number); null or absent
    /// for a first sync.
    #[serde(default)]
    pub last_sync_at: serde_json::Value,
    #[serde(default)]
    pub changes: Vec<DeltaChange>,
    #[serde(default)]
    pub device_id: Option<String>,
    /// All changes or none.
    #[serde(default)]
    pub atomic: bool,
}

/// One change of the request.
#[derive(Debug, Deserialize)]
pub struct DeltaChange {
    pub entity_type: String,
    pub entity_id: String,
    pub action: String,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    /// The server version the edit is based on (0 or absent for a create; absent for an update
    /// or delete: the current version, last writer wins).
    #[serde(default)]
    pub version: Option<u64>,
    /// When the client made the change (`updated_at`, for `timestamp_wins`); absent: now.
    #[serde(default)]
    pub client_timestamp: Option<String>,
}

/// One entry of `server_changes`.
#[derive(Debug, Serialize)]
pub struct ServerChange {
    pub entity_type: String,
    pub entity_id: String,
    /// `create` (new since `last_sync_at`), `update` or `delete`.
    pub action: &'static str,
    pub data: Option<Box<RawValue>>,
    pub version: Option<i64>,
    pub client_timestamp: Option<String>,
}

/// One conflict met by a change of the request (also in `object_version_history`).
#[derive(Debug, Serialize)]
pub struct DeltaConflict {
    pub entity_type: String,
    pub entity_id: String,
    /// `version_mismatch` (changed on the server after `version`) or `deleted_on_server`.
    pub conflict_reason: &'static str,
    /// `<strategy>:<winner>` as in the history row.
    pub resolution: Resolution,
    pub client_version: Option<u64>,
    pub server_version: i64,
    /// The entity's data after the request (null: deleted).
    pub server_data: Option<Box<RawValue>>,
    /// The history row.
    pub conflict_id: String,
}

/// A change rejected on its own.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaError {
    /// Its position in `changes` (from 0).
    pub index: usize,
    pub entity_type: String,
    pub entity_id: String,
    pub error: ErrorCode,
    pub reason: RejectReason,
    pub message: String,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct DeltaResponse {
    pub server_changes: Vec<ServerChange>,
    pub conflicts: Vec<DeltaConflict>,
    pub last_sync_at: String,
    pub has_more: bool,
    pub success: bool,
    pub applied_count: u64,
    pub error_count: u64,
    pub errors: Vec<DeltaError>,
}

/// A change translated for the engine, or why it cannot be.
fn to_change(c: &DeltaChange, now: &str) -> Result<Change, ChangeRejection> {
    let (operation, fields, base) = match c.action.as_str() {
        "create" => ("INSERT", None, 0),
        // A partial update names its fields by carrying only them (PROTOCOL §5.1).
        "update" => {
            let names = c
                .data
                .as_deref()
                .and_then(|d| object_fields(d.get()))
                .map(|f| f.into_iter().map(|(k, _)| k).collect::<Vec<_>>());
            ("UPDATE", names, c.version.unwrap_or(0))
        }
        "delete" => ("DELETE", None, c.version.unwrap_or(0)),
        other => {
            return Err(ChangeRejection::new(
                RejectReason::UnknownOperation,
                format!(
                    "action {:?} is not create, update or delete",
                    other.chars().take(40).collect::<String>()
                ),
            ))
        }
    };
    Ok(Change {
        change_id: uuid::Uuid::new_v4().to_string(),
        entity_type: c.entity_type.clone(),
        entity_uuid: c.entity_id.clone(),
        operation: operation.into(),
        base_version: Some(base),
        version: None,
        updated_at: c
            .client_timestamp
            .clone()
            .unwrap_or_else(|| now.to_string()),
        data: if operation == "DELETE" {
            None
        } else {
            c.data.clone()
        },
        fields,
    })
}

/// What applying the request did (before `server_changes` are read).
#[derive(Default)]
struct Applying {
    applied: u64,
    errors: Vec<DeltaError>,
    conflicts: Vec<DeltaConflict>,
    /// A change rejected or a conflict lost outright.
    lost: bool,
    /// Change ids the request wrote: its own states are not sent back to it.
    own: HashSet<String>,
}

impl Engine {
    /// Applies a delta request and answers it (PROTOCOL §11.2).
    pub fn delta_sync(&self, node: &Node, req: DeltaRequest) -> EngineResult<DeltaResponse> {
        if req.changes.len() > MAX_CHANGES {
            return Err(EngineError::TooManyChanges(format!(
                "{} changes in one request; at most {MAX_CHANGES}: send them in several requests \
                 (nothing was applied)",
                req.changes.len()
            )));
        }
        let since = match &req.last_sync_at {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Since::parse(s)?),
            serde_json::Value::Number(n) => Some(Since::parse(&n.to_string())?),
            _ => {
                return Err(EngineError::InvalidRequest(
                    "last_sync_at must be the last answer's last_sync_at (a time) or null".into(),
                ))
            }
        };
        let device = match req.device_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) if d.chars().count() > MAX_DEVICE_CHARS || d.chars().any(char::is_control) => {
                return Err(EngineError::InvalidRequest(format!(
                    "device_id must be at most {MAX_DEVICE_CHARS} printable characters"
                )))
            }
            Some(d) => Some(d.to_string()),
        };
        let now = starsync_protocol::now_ts();
        let clock = ClockRule::now(self.settings.sync.max_clock_skew_secs);
        let limit = 5 * self.settings.sync.batch_size;
        // An atomic request's first rejection: the transaction is rolled back and the answer
        // names it.
        let mut refused: Option<DeltaError> = None;
        let result = self.write(|conn| {
            let view = self.view(conn, node)?;
            let applying = self.apply_delta(conn, node, &view, &req, &now, &clock)?;
            if req.atomic {
                if let Some(first) = applying.errors.first() {
                    refused = Some(first.clone());
                    return Err(EngineError::InvalidRequest("atomic batch refused".into()));
                }
            }
            if let Some(d) = &device {
                store::cursor::note_device(conn, &node.id, d)?;
            }
            store::watermelon::note_sync(conn, &node.id, true, &now)?;
            let read = self.server_changes(conn, &view, since.as_ref(), &applying.own, limit)?;
            Ok((applying, read))
        });
        let (applying, (server_changes, has_more, last_sync_at)) = match (result, refused) {
            (_, Some(first)) => {
                // Nothing was applied; the changes since `last_sync_at` are still told.
                let read = self.write(|conn| {
                    let view = self.view(conn, node)?;
                    self.server_changes(conn, &view, since.as_ref(), &HashSet::new(), limit)
                })?;
                let applying = Applying {
                    errors: vec![first],
                    lost: true,
                    ..Applying::default()
                };
                (applying, read)
            }
            (Ok(v), None) => v,
            (Err(e), None) => return Err(e),
        };
        tracing::info!(
            node = %node.code,
            device = device.as_deref().unwrap_or(""),
            changes = req.changes.len(),
            applied = applying.applied,
            errors = applying.errors.len(),
            conflicts = applying.conflicts.len(),
            server_changes = server_changes.len(),
            "delta sync"
        );
        Ok(DeltaResponse {
            server_changes,
            success: !applying.lost,
            applied_count: applying.applied,
            error_count: applying.errors.len() as u64,
            errors: applying.errors,
            conflicts: applying.conflicts,
            last_sync_at,
            has_more,
        })
    }

    /// Applies the request's changes, in order, each under every rule of a node change.
    fn apply_delta(
        &self,
        conn: &mut Conn,
        node: &Node,
        view: &View,
        req: &DeltaRequest,
        now: &str,
        clock: &ClockRule,
    ) -> EngineResult<Applying> {
        let mut out = Applying::default();
        let mut seq = SeqAlloc::begin(conn)?;
        let mut ctx = self.node_ctx(&node.id, now, &mut seq);
        let translated: Vec<_> = req
            .changes
            .iter()
            .map(|c| to_change(c, now).and_then(|ch| validate_change(&ch, clock).map(|v| (ch, v))))
            .collect();
        // Only valid keys reach a query (PostgreSQL refuses a NUL in any text).
        ctx.preload(
            conn,
            translated
                .iter()
                .filter_map(|t| t.as_ref().ok())
                .map(|(c, _)| (c.entity_type.as_str(), c.entity_uuid.as_str())),
        )?;
        for (index, (c, t)) in req.changes.iter().zip(translated).enumerate() {
            let rejected = |r: ChangeRejection| DeltaError {
                index,
                entity_type: starsync_protocol::echo_field(&c.entity_type),
                entity_id: starsync_protocol::echo_field(&c.entity_id),
                error: ErrorCode::InvalidChange,
                reason: r.reason,
                message: r.message,
            };
            let (change, valid) = match t {
                Ok(v) => v,
                Err(r) => {
                    out.errors.push(rejected(r));
                    out.lost = true;
                    continue;
                }
            };
            // An update or delete without `version` is based on the current state.
            let change = if c.version.is_none() && c.action != "create" {
                let current = ctx.current(conn, &change.entity_type, &change.entity_uuid)?;
                Change {
                    base_version: Some(current.map_or(0, |e| e.version as u64)),
                    ..change
                }
            } else {
                change
            };
            match self.apply_node_change(conn, &mut ctx, view, &change, &valid, false)? {
                Ok(Applied::Done) => {
                    out.applied += 1;
                    out.own.insert(change.change_id.clone());
                }
                Ok(Applied::Conflict(report)) => {
                    out.applied += 1;
                    out.own.insert(change.change_id.clone());
                    let after = ctx.current(conn, &change.entity_type, &change.entity_uuid)?;
                    let version_after = after.as_ref().map_or(0, |e| e.version);
                    // Lost outright: the server kept its state and nothing of the change got
                    // in (a merge, done wins or the client's win make a new version).
                    if report.conflict_resolution.winner != Winner::Client
                        && version_after == report.server_version
                    {
                        out.lost = true;
                    }
                    let server_data = match after {
                        Some(e) if !e.is_deleted => Some(raw(e.data)?),
                        _ => None,
                    };
                    out.conflicts.push(DeltaConflict {
                        entity_type: report.entity_type,
                        entity_id: report.entity_uuid,
                        conflict_reason: match report.conflict_resolution {
                            Resolution {
                                strategy: starsync_protocol::Strategy::DeleteWins,
                                winner: Winner::Server,
                            } => "deleted_on_server",
                            _ => "version_mismatch",
                        },
                        resolution: report.conflict_resolution,
                        client_version: c.version,
                        server_version: report.server_version,
                        server_data,
                        conflict_id: report.conflict_id,
                    });
                }
                Err(r) => {
                    out.errors.push(rejected(r));
                    out.lost = true;
                }
            }
        }
        ctx.flush(conn)?;
        drop(ctx);
        seq.finish(conn)?;
        Ok(out)
    }

    /// The changes since `since` in the node's view, at most `limit`, and the time that
    /// continues after them (handed out in this transaction). States the request wrote and the
    /// node holds as sent (`own`) are left out.
    fn server_changes(
        &self,
        conn: &mut Conn,
        view: &View,
        since: Option<&Since>,
        own: &HashSet<String>,
        limit: usize,
    ) -> EngineResult<(Vec<ServerChange>, bool, String)> {
        let upto = store::last_seq(conn)?;
        let mut read = LogRead {
            view: Some(view),
            types: None,
            since: None,
            upto,
            limit,
        };
        read.since = match since {
            Some(s) => Some(resolve(conn, s, upto, &read.exit_scopes())?),
            None => None,
        };
        let node_id = view.node_id.as_str();
        let skip = |e: &crate::store::models::Entity| {
            e.holder_node_id.as_deref() == Some(node_id)
                && e.change_id.as_deref().is_some_and(|id| own.contains(id))
        };
        let page = read.page(conn, &skip)?;
        let (time, at) = hand_out(conn, page.end)?;
        let since_seq = read.since;
        let mut out = Vec::with_capacity(page.items.len());
        for item in page.items {
            out.push(match item {
                Item::State(e) if e.is_deleted => ServerChange {
                    entity_type: e.entity_type,
                    entity_id: e.entity_uuid,
                    action: "delete",
                    data: None,
                    version: Some(e.version),
                    client_timestamp: Some(e.updated_at),
                },
                Item::State(e) => ServerChange {
                    action: if since_seq.is_none_or(|s| e.created_seq > s) {
                        "create"
                    } else {
                        "update"
                    },
                    data: Some(raw(e.data)?),
                    entity_type: e.entity_type,
                    entity_id: e.entity_uuid,
                    version: Some(e.version),
                    client_timestamp: Some(e.updated_at),
                },
                Item::Left {
                    entity_type,
                    entity_uuid,
                    ..
                } => ServerChange {
                    entity_type,
                    entity_id: entity_uuid,
                    action: "delete",
                    data: None,
                    version: None,
                    client_timestamp: None,
                },
            });
        }
        Ok((out, page.has_more || at < page.end, time))
    }
}

fn raw(data: String) -> EngineResult<Box<RawValue>> {
    RawValue::from_string(data)
        .map_err(|e| store::StoreError::Corrupt(format!("stored data is not JSON: {e}")).into())
}
