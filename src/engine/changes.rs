//! The change feed, `GET /api/sync/changes` (PROTOCOL §11.3): a page of the log since a cursor,
//! within the node's scopes and types, read from one snapshot by [`LogRead`], with the
//! cursor that continues it.

use std::collections::{BTreeMap, BTreeSet};

use super::cursor::{resolve, Item, LogRead, Since};
use super::watermelon::write_record_with;
use super::{Engine, EngineError, EngineResult};
use crate::store::models::Node;
use crate::store::watermelon::Snapshot;

/// Records per page unless the client asks otherwise, and the most it may ask for.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

/// A feed request, checked.
#[derive(Debug, Clone)]
pub struct FeedQuery {
    pub since: Option<Since>,
    /// The types asked for (None: every type the node sees).
    pub types: Option<BTreeSet<String>>,
    pub limit: usize,
}

impl FeedQuery {
    /// Reads the query parameters: `since` (a cursor, or absent), `types` (comma-separated
    /// type names), `limit` (1 to [`MAX_LIMIT`]).
    pub fn parse(
        since: Option<&str>,
        types: Option<&str>,
        limit: Option<&str>,
    ) -> EngineResult<FeedQuery> {
        let since = since
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Since::parse)
            .transpose()?;
        let types = match types.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(list) => {
                let mut set = BTreeSet::new();
                for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    starsync_protocol::EntityType::parse(t)
                        .map_err(|e| EngineError::InvalidRequest(format!("types: {e}")))?;
                    set.insert(t.to_string());
                }
                Some(set)
            }
        };
        let limit = match limit.map(str::trim) {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    EngineError::InvalidRequest(format!(
                        "limit {:?} must be a whole number from 1 to {MAX_LIMIT}",
                        s.chars().take(40).collect::<String>()
                    ))
                })?,
        };
        Ok(FeedQuery {
            since,
            types,
            limit,
        })
    }
}

impl Engine {
    /// One page of the change feed, as the JSON answer.
    ///
    /// Read from one snapshot (so the page and its end point agree), then the end point's time
    /// is handed out in a short write transaction.
    pub fn change_feed(&self, node: &Node, q: &FeedQuery) -> EngineResult<Vec<u8>> {
        let mut snap = Snapshot::begin(self.pool.get()?)?;
        // The first read fixes the snapshot: it holds exactly the commits up to `upto`.
        let upto = crate::store::last_seq(snap.conn())?;
        let view = match self.scoping() {
            Some(_) => Some(self.view(snap.conn(), node)?),
            None => None,
        };
        let mut read = LogRead {
            view: view.as_ref(),
            types: q.types.as_ref(),
            since: None,
            upto,
            limit: q.limit,
        };
        read.since = match &q.since {
            Some(s) => Some(resolve(snap.conn(), s, upto, &read.exit_scopes())?),
            None => None,
        };
        let page = read.page(snap.conn(), &|_| false)?;
        drop(snap);
        let (time, cursor) = self.hand_out_time(&node.id, page.end)?;
        tracing::info!(
            node = %node.code,
            since = ?read.since,
            records = page.items.len(),
            cursor,
            has_more = page.has_more,
            "change feed"
        );

        let mut entities: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut deleted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in page.items {
            match item {
                Item::State(e) if !e.is_deleted => {
                    let out = entities.entry(e.entity_type.clone()).or_default();
                    if !out.is_empty() {
                        out.push(b',');
                    }
                    write_record_with(
                        out,
                        &e.entity_uuid,
                        &e.data,
                        &[
                            (
                                "updated_at",
                                serde_json::Value::from(e.updated_at).to_string(),
                            ),
                            ("version", e.version.to_string()),
                        ],
                    );
                }
                Item::State(e) => deleted
                    .entry(e.entity_type)
                    .or_default()
                    .push(e.entity_uuid),
                Item::Left {
                    entity_type,
                    entity_uuid,
                    ..
                } => deleted.entry(entity_type).or_default().push(entity_uuid),
            }
        }
        let mut out = Vec::new();
        let head = serde_json::json!({
            "since": q.since.as_ref().map(Since::to_json),
            "updatedAt": time,
            "cursor": cursor,
            // A fallback to a lower point (see `cursor::hand_out`) leaves entries after it.
            "has_more": page.has_more || cursor < page.end,
        })
        .to_string();
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"entities\":{");
        for (i, (t, records)) in entities.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(serde_json::Value::from(t.as_str()).to_string().as_bytes());
            out.extend_from_slice(b":[");
            out.extend_from_slice(records);
            out.push(b']');
        }
        out.extend_from_slice(b"},\"deleted\":");
        out.extend_from_slice(
            serde_json::to_string(&deleted)
                .expect("a map of strings serializes")
                .as_bytes(),
        );
        out.push(b'}');
        Ok(out)
    }
}
