//! Scopes (PROTOCOL §10): an entity's scope, the write rules for a node's change, and a node's
//! scopes and types (registration, `PATCH /api/sync/nodes/{id}`).
//!
//! Why here, once: every way in (exchange, packet files, and later section 11's protocols)
//! goes through [`Scoping::check_write`] and the view of [`Engine::view`]; without `[scopes]`
//! [`Engine::scoping`] is `None` and none of it runs, so an unscoped hub pays nothing.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::config::{ConflictSettings, ScopeSettings, TypeScope};
use crate::store::models::{Entity, Node, NodeScope, ScopeLoss};
use crate::store::pending::View;
use crate::store::scopes::{self, ALL, GLOBAL};
use crate::store::{nodes, Conn, StoreResult};
use starsync_protocol::{ChangeRejection, EntityType, Operation, RejectReason};

use super::{Engine, EngineError, EngineResult};

/// Most scopes one node may have (each is one row and one query per packet).
pub const MAX_NODE_SCOPES: usize = 256;

/// Most types in one node's `types`.
pub const MAX_NODE_TYPES: usize = 1000;

/// A valid scope value: 1–128 characters, no control characters, and not `*` (which names
/// every scope, so no entity can have it).
pub fn valid_scope_value(s: &str) -> bool {
    let n = s.chars().count();
    (1..=128).contains(&n) && s != ALL && !s.chars().any(char::is_control)
}

/// What an entity's data says about its scope field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// The field is absent.
    Missing,
    /// A valid scope value.
    Scope(String),
    /// Present, but not a valid scope value (`null`, a number, `""`, `"*"`, too long).
    Invalid,
}

/// Reads one top-level field of a JSON object without building the document: the other
/// values are skipped by the parser (`IgnoredAny`), so the write path pays one scan of the
/// text, not a tree. Data that is not an object reads as [`FieldValue::Missing`].
pub fn read_field(data: &str, field: &str) -> FieldValue {
    let mut de = serde_json::Deserializer::from_str(data);
    FieldSeek(field)
        .deserialize(&mut de)
        .unwrap_or(FieldValue::Missing)
}

struct FieldSeek<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldSeek<'_> {
    type Value = FieldValue;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeek<'_> {
    type Value = FieldValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        let mut found = FieldValue::Missing;
        while let Some(is_it) = map.next_key_seed(KeyIs(self.0))? {
            if is_it {
                found = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) if valid_scope_value(&s) => FieldValue::Scope(s),
                    _ => FieldValue::Invalid,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key compared with the field's name without allocating.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// `data` with `"field": "scope"` added as its first member (the data lacks the field). Text
/// surgery, so the rest of the data travels byte for byte (docs/design.md, "Storage choices").
pub fn stamp(data: &str, field: &str, scope: &str) -> String {
    let member = format!(
        "{}:{}",
        serde_json::Value::from(field),
        serde_json::Value::from(scope)
    );
    let open = data.find('{').unwrap_or(0);
    let (head, rest) = data.split_at(open + 1);
    let empty = rest.trim_start().starts_with('}');
    let sep = if empty { "" } else { "," };
    format!("{head}{member}{sep}{rest}")
}

/// The configured scope rules (`[scopes]` and the per-type settings).
#[derive(Clone, Copy)]
pub struct Scoping<'a> {
    settings: &'a ScopeSettings,
    conflicts: &'a ConflictSettings,
}

impl<'a> Scoping<'a> {
    pub fn new(settings: &'a ScopeSettings, conflicts: &'a ConflictSettings) -> Scoping<'a> {
        Scoping {
            settings,
            conflicts,
        }
    }

    pub fn is_global(&self, entity_type: &str) -> bool {
        self.conflicts
            .rules(entity_type)
            .and_then(|r| r.scope)
            .is_some_and(|s| s == TypeScope::Global)
    }

    /// The field holding a type's scope.
    pub fn field(&self, entity_type: &str) -> &'a str {
        self.conflicts
            .rules(entity_type)
            .and_then(|r| r.scope_field.as_deref())
            .unwrap_or(&self.settings.field)
    }

    /// `entities.scope` for a state: `''` for a global type, the field's value when it is a
    /// valid scope, `None` otherwise (seen only by `*` nodes).
    pub fn entity_scope(&self, entity_type: &str, data: &str) -> Option<String> {
        if self.is_global(entity_type) {
            return Some(GLOBAL.to_string());
        }
        match read_field(data, self.field(entity_type)) {
            FieldValue::Scope(s) => Some(s),
            _ => None,
        }
    }

    /// The write rules for one node change (PROTOCOL §10): the type must be among the node's,
    /// the entity's scope before the change (`existing`) and after it must be among its scopes.
    /// Answers the data to apply instead of the node's when the server stamps the scope.
    ///
    /// The message of `forbidden_scope` is the same whatever the reason (another tenant's
    /// entity, or a write into another scope), so it tells nothing about whether the entity
    /// exists.
    pub fn check_write(
        &self,
        view: &View,
        existing: Option<&Entity>,
        entity_type: &str,
        op: Operation,
        data: &str,
    ) -> Result<Option<String>, ChangeRejection> {
        if !view.sees_type(entity_type) {
            return Err(ChangeRejection::new(
                RejectReason::ForbiddenType,
                format!("this node does not synchronize entity type {entity_type} (its types)"),
            ));
        }
        let field = self.field(entity_type);
        let forbidden = || {
            ChangeRejection::new(
                RejectReason::ForbiddenScope,
                format!(
                    "the entity is not in this node's scopes ({field} before and after the \
                     change must be one of them)"
                ),
            )
        };
        if self.is_global(entity_type) {
            if view.all {
                return Ok(None);
            }
            return Err(ChangeRejection::new(
                RejectReason::ForbiddenScope,
                format!(
                    "entity type {entity_type} is global: only the admin and nodes with the \
                     scope * may write it"
                ),
            ));
        }
        if let Some(e) = existing {
            if !view.sees_scope(e.scope.as_deref()) {
                return Err(forbidden());
            }
        }
        if op == Operation::Delete {
            return Ok(None);
        }
        match read_field(data, field) {
            FieldValue::Scope(s) if view.sees_scope(Some(&s)) => Ok(None),
            FieldValue::Scope(_) => Err(forbidden()),
            FieldValue::Invalid => Err(ChangeRejection::new(
                RejectReason::InvalidScope,
                format!("{field} must be a string of 1-128 characters other than *"),
            )),
            FieldValue::Missing => match view.single_scope() {
                Some(s) => Ok(Some(stamp(data, field, s))),
                None => Err(ChangeRejection::new(
                    RejectReason::ScopeRequired,
                    format!(
                        "data must name its scope in {field}: this node has several scopes \
                         (or *), so the server cannot choose one"
                    ),
                )),
            },
        }
    }
}

/// A node's scopes and types as requested, validated and normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `{"*"}` alone, or tenant scopes (never the global marker).
    pub scopes: BTreeSet<String>,
    pub types: Option<BTreeSet<String>>,
}

/// Checks a scope list (422 on a bad value): each 1–128 characters, `*` only alone.
pub fn parse_scopes(list: &[String]) -> EngineResult<BTreeSet<String>> {
    if list.len() > MAX_NODE_SCOPES {
        return Err(EngineError::InvalidRequest(format!(
            "a node has at most {MAX_NODE_SCOPES} scopes (use \"*\" for all)"
        )));
    }
    let mut out = BTreeSet::new();
    for s in list {
        if s != ALL && !valid_scope_value(s) {
            return Err(EngineError::InvalidRequest(format!(
                "scope {:?} is not valid: a scope is a string of 1-128 characters without \
                 control characters, or \"*\" for all",
                s.chars().take(140).collect::<String>()
            )));
        }
        out.insert(s.clone());
    }
    if out.contains(ALL) && out.len() > 1 {
        return Err(EngineError::InvalidRequest(
            "\"*\" means every scope: give it alone".into(),
        ));
    }
    Ok(out)
}

/// Checks a type list (422): each a valid entity type name; at least one.
pub fn parse_types(list: &[String]) -> EngineResult<BTreeSet<String>> {
    if list.is_empty() || list.len() > MAX_NODE_TYPES {
        return Err(EngineError::InvalidRequest(format!(
            "types names 1 to {MAX_NODE_TYPES} entity types (leave it out, or null, for every type)"
        )));
    }
    let mut out = BTreeSet::new();
    for t in list {
        EntityType::parse(t)
            .map_err(|e| EngineError::InvalidRequest(format!("types: {}", e.message)))?;
        out.insert(t.clone());
    }
    Ok(out)
}

pub fn types_json(types: &Option<BTreeSet<String>>) -> Option<String> {
    types
        .as_ref()
        .map(|t| serde_json::to_string(t).expect("a list of strings serializes"))
}

/// The rows of a newly registered node's streams: its scopes (or `*`) and, unless it has `*`,
/// the global types' stream. All start at cursor 0, like registration without scopes.
pub fn initial_rows(node: &Node, scopes: &BTreeSet<String>) -> Vec<NodeScope> {
    let mut set: BTreeSet<&str> = scopes.iter().map(String::as_str).collect();
    if !set.contains(ALL) {
        set.insert(GLOBAL);
    }
    set.into_iter()
        .map(|s| NodeScope {
            node_id: node.id.clone(),
            scope: s.to_string(),
            acked_seq: 0,
            since_seq: node.registered_seq,
            since_packet: 0,
        })
        .collect()
}

/// Moves a node to new scopes and/or types, inside the write transaction. O(number of the
/// node's scopes) rows, never one per entity: a gained scope is a row whose cursor starts at 0
/// (its entities then travel through the ordinary packets), a lost one a loss row that the
/// packets drain.
pub fn change_view(
    conn: &mut Conn,
    node: &Node,
    new_scopes: Option<BTreeSet<String>>,
    new_types: Option<Option<BTreeSet<String>>>,
    last_seq: i64,
) -> StoreResult<()> {
    let rows = scopes::of_node(conn, &node.id)?;
    // A node without rows (registered before scopes) is `*` through its old cursor.
    let legacy = rows.is_empty();
    let old: Vec<NodeScope> = if legacy {
        vec![NodeScope {
            node_id: node.id.clone(),
            scope: ALL.to_string(),
            acked_seq: node.acked_seq,
            since_seq: node.registered_seq,
            since_packet: 0,
        }]
    } else {
        rows
    };
    let old_set: BTreeSet<String> = old.iter().map(|r| r.scope.clone()).collect();
    let mut want: BTreeSet<String> = match &new_scopes {
        Some(s) => s.clone(),
        None => old_set.iter().filter(|s| *s != GLOBAL).cloned().collect(),
    };
    if !want.contains(ALL) {
        want.insert(GLOBAL.to_string());
    }
    let packet = node.sent_packet_no;
    let star = old.iter().find(|r| r.scope == ALL).cloned();
    // A loss from `cursor`: 0 for a scope the node no longer sees (its live entities must go),
    // the stream's own cursor where the node keeps seeing them and only the tombstones it was
    // still owed must come (their stream is replaced by one that starts at the PATCH).
    let loss = |r: &NodeScope, cursor: i64| ScopeLoss {
        node_id: node.id.clone(),
        scope: r.scope.clone(),
        cursor_seq: cursor,
        loss_seq: last_seq,
        acked_at_loss: r.acked_seq,
        since_packet: packet,
    };
    if legacy {
        // Materialize the implicit `*` row, so what follows is one case.
        scopes::insert(conn, &old[0])?;
    }
    for r in &old {
        if !want.contains(&r.scope) {
            scopes::remove(conn, &node.id, &r.scope)?;
            if want.contains(ALL) {
                // Gaining `*` hides nothing, but the old stream's undelivered tombstones
                // are still owed.
                scopes::record_loss(conn, &loss(r, r.acked_seq))?;
            } else if r.scope != GLOBAL {
                scopes::record_loss(conn, &loss(r, 0))?;
            }
        }
    }
    for s in &want {
        if old_set.contains(s) {
            continue;
        }
        // A node that had `*` holds every scope up to its `*` cursor already.
        let row = match &star {
            Some(st) => NodeScope {
                node_id: node.id.clone(),
                scope: s.clone(),
                acked_seq: st.acked_seq,
                since_seq: st.since_seq,
                since_packet: st.since_packet.min(packet),
            },
            None => NodeScope {
                node_id: node.id.clone(),
                scope: s.clone(),
                acked_seq: 0,
                since_seq: last_seq,
                since_packet: packet,
            },
        };
        scopes::insert(conn, &row)?;
    }
    if let Some(types) = new_types {
        let old_types = crate::store::pending::parse_types(node.types.as_deref())
            .map(|t| t.into_iter().collect::<BTreeSet<_>>());
        if types != old_types {
            let narrowed = match (&old_types, &types) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(o), Some(n)) => !o.is_subset(n),
            };
            let widened = match (&old_types, &types) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(o), Some(n)) => !n.is_subset(o),
            };
            scopes::set_types(conn, &node.id, types_json(&types).as_deref())?;
            for r in scopes::of_node(conn, &node.id)? {
                // Dropped types: their entities leave the view, drained like a lost scope
                // (from 0). Added types: the stream starts over at the PATCH (what the node
                // holds comes again), and a loss from its old cursor still brings the
                // tombstones it was owed.
                if narrowed || widened {
                    let from = if narrowed { 0 } else { r.acked_seq };
                    scopes::record_loss(conn, &loss(&r, from))?;
                }
                if widened {
                    scopes::restart(conn, &node.id, &r.scope, last_seq, packet)?;
                }
            }
        }
    }
    Ok(())
}

impl Engine {
    /// The scope rules, or `None` on a hub without `[scopes]`.
    pub fn scoping(&self) -> Option<Scoping<'_>> {
        self.settings
            .scopes
            .as_ref()
            .map(|s| Scoping::new(s, &self.settings.conflicts))
    }

    /// What a node sees and through which cursors (the pending rule's input).
    pub fn view(&self, conn: &mut Conn, node: &Node) -> StoreResult<View> {
        if self.settings.scopes.is_none() {
            return Ok(View::unscoped(node));
        }
        View::load(conn, node)
    }

    /// Views of many nodes (listings).
    pub fn views(&self, conn: &mut Conn, list: &[Node]) -> StoreResult<Vec<View>> {
        list.iter().map(|n| self.view(conn, n)).collect()
    }

    /// `PATCH /api/sync/nodes/{id}`: new scopes and/or types for a node (admin).
    pub fn patch_node(
        &self,
        id_or_code: &str,
        scopes: Option<Vec<String>>,
        types: Option<Option<Vec<String>>>,
    ) -> EngineResult<starsync_protocol::api::NodeInfo> {
        if self.settings.scopes.is_none() {
            return Err(EngineError::InvalidRequest(
                "this hub has no [scopes] configuration: every node sees every entity".into(),
            ));
        }
        if scopes.is_none() && types.is_none() {
            return Err(EngineError::InvalidRequest(
                "give \"scopes\" and/or \"types\"".into(),
            ));
        }
        let scopes = scopes.as_deref().map(parse_scopes).transpose()?;
        let types = types
            .map(|t| t.as_deref().map(parse_types).transpose())
            .transpose()?;
        let node = self.find_node(id_or_code)?;
        let node = self.write_noting(|c| {
            let node = nodes::by_id(c, &node.id)?
                .ok_or_else(|| EngineError::NotFound(format!("no node {id_or_code:?}")))?;
            let last = crate::store::last_seq(c)?;
            change_view(c, &node, scopes, types, last)?;
            let node = nodes::by_id(c, &node.id)?.unwrap_or(node);
            // Ends the node's open streams: they reconnect with the new view and hear
            // `pending` for the scope's entities (or its DELETEs) at once.
            let event = super::live::AdminEvent::new(
                "node",
                serde_json::json!({
                    "node_id": node.id,
                    "node_code": node.code,
                    "action": "view_changed",
                    "active": node.active,
                }),
            );
            Ok((node, vec![event]))
        })?;
        tracing::info!(node = %node.code, "node scopes or types changed");
        self.read(|c| {
            let v = self.view(c, &node)?;
            let pending = crate::store::pending::count(c, &v)?;
            Ok(super::admin::nodes::node_info(node, pending, &v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_field_without_a_tree() {
        assert_eq!(
            read_field(r#"{"a":[1,{"t":"x"}],"t":"fam-1"}"#, "t"),
            FieldValue::Scope("fam-1".into())
        );
        assert_eq!(read_field(r#"{"a":1}"#, "t"), FieldValue::Missing);
        assert_eq!(read_field(r#"{"t":null}"#, "t"), FieldValue::Invalid);
        assert_eq!(read_field(r#"{"t":"*"}"#, "t"), FieldValue::Invalid);
        assert_eq!(read_field(r#"{"t":""}"#, "t"), FieldValue::Invalid);
        assert_eq!(
            read_field(r#"{"\u0074":"e"}"#, "t"),
            FieldValue::Scope("e".into())
        );
    }

    #[test]
    fn stamps_as_the_first_member() {
        assert_eq!(stamp("{}", "t", "a"), r#"{"t":"a"}"#);
        assert_eq!(
            stamp(r#" { "x": 1.50 }"#, "t", "a\"b"),
            r#" {"t":"a\"b", "x": 1.50 }"#
        );
    }
}
