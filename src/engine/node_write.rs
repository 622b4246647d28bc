//! One node change under every rule: the scope rules of PROTOCOL §10 (which may stamp the
//! node's one scope into the data), then the conflict rules of §5 and §5.1 ([`apply_change`]).
//!
//! Why one function: every way a node writes (packets, packet files, WatermelonDB pushes,
//! delta sync, simple push, REST entity writes) must obey exactly the same rules in the same
//! order; each protocol only translates its request into [`Change`]s and the outcomes into its
//! answer.

use serde_json::value::RawValue;

use super::apply::{apply_change, apply_change_isolated, Applied, ApplyCtx};
use super::Engine;
use crate::store::pending::View;
use crate::store::{Conn, StoreError};
use starsync_protocol::{Change, ChangeRejection, ValidChange};

/// What one node change did: applied (a no-op or a conflict included), or rejected on its own
/// with a reason. A store error (the `Err` of the outer `Result`) fails the whole transaction.
pub type NodeWriteOutcome = Result<Result<Applied, ChangeRejection>, StoreError>;

impl Engine {
    /// The [`ApplyCtx`] of one node's changes in a write transaction: the hub's entity size
    /// limit and, with `[scopes]`, the rules that give each new state its scope. Every protocol
    /// starts its node writes here, so none can forget a limit or the scope bookkeeping.
    pub fn node_ctx<'a>(
        &'a self,
        node_id: &'a str,
        now: &'a str,
        seq: &'a mut super::apply::SeqAlloc,
    ) -> ApplyCtx<'a> {
        let mut ctx = ApplyCtx::new(node_id, now, seq, self.settings.server.max_entity_bytes);
        ctx.scoping = self.scoping();
        ctx
    }

    /// Applies one node change that passed [`starsync_protocol::validate_change`], inside the
    /// caller's write transaction and [`ApplyCtx`] (whose `node_id` is the author and whose
    /// `scoping` the caller set from [`Engine::scoping`]).
    ///
    /// - `view`: the node's view ([`Engine::view`]; without `[scopes]` it is unscoped and
    ///   costs nothing). With scopes, [`super::scopes::Scoping::check_write`] decides first,
    ///   against the entity as this transaction has left it so far, so a change outside the
    ///   node's scopes or types is rejected before the conflict rules see it (and nothing of
    ///   the entity is revealed). Taking the view always, rather than an `Option`, means no
    ///   caller can skip the scope rules by passing nothing.
    /// - When the server stamped the node's one scope, the stored state differs from what the
    ///   node sent, so the node is made not to hold it (it receives it back: §3's echo rule).
    /// - `isolate`: apply inside a savepoint and write at once ([`apply_change_isolated`]), so
    ///   a statement the database refuses rejects this change alone.
    ///
    /// The change's type decides its [`crate::config::TypeRules`] and strategy; a caller that
    /// needs another strategy (simple push: last writer by timestamp) uses
    /// [`Engine::apply_node_change_as`].
    pub fn apply_node_change(
        &self,
        conn: &mut Conn,
        ctx: &mut ApplyCtx<'_>,
        view: &View,
        change: &Change,
        valid: &ValidChange,
        isolate: bool,
    ) -> NodeWriteOutcome {
        let strategy = self.settings.conflicts.strategy_for(&change.entity_type);
        self.apply_node_change_as(conn, ctx, view, change, valid, strategy, isolate)
    }

    /// [`Engine::apply_node_change`] under a given conflict strategy instead of the type's
    /// (the type's other rules, `immutable`, `priority_values`, `resurrect`, still apply).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_node_change_as(
        &self,
        conn: &mut Conn,
        ctx: &mut ApplyCtx<'_>,
        view: &View,
        change: &Change,
        valid: &ValidChange,
        strategy: crate::config::Strategy,
        isolate: bool,
    ) -> NodeWriteOutcome {
        let stamped;
        let mut was_stamped = false;
        let c = match self.scoping() {
            Some(sc) => {
                let existing = ctx.current(conn, &change.entity_type, &change.entity_uuid)?;
                // A partial change (PROTOCOL §5.1) that leaves the scope field alone keeps the
                // entity's scope: only the rules on the state before the change apply (those
                // of a DELETE). Its data need not carry the scope, so a node with several
                // scopes can send it without `scope_required`.
                let field = sc.field(&change.entity_type);
                let keeps_scope = existing.is_some()
                    && change
                        .fields
                        .as_ref()
                        .is_some_and(|f| !f.iter().any(|n| n == field));
                let op = if keeps_scope {
                    starsync_protocol::Operation::Delete
                } else {
                    valid.operation
                };
                match sc.check_write(
                    view,
                    existing.as_ref(),
                    &change.entity_type,
                    op,
                    change.data_text(),
                ) {
                    Err(r) => return Ok(Err(r)),
                    Ok(Some(data)) => {
                        let raw = RawValue::from_string(data).map_err(|e| {
                            StoreError::Corrupt(format!("stamping a scope broke the JSON: {e}"))
                        })?;
                        stamped = Change {
                            data: Some(raw),
                            ..change.clone()
                        };
                        was_stamped = true;
                        &stamped
                    }
                    Ok(None) => change,
                }
            }
            None => change,
        };
        let rules = self.settings.conflicts.rules(&c.entity_type);
        let applied = if isolate {
            apply_change_isolated(conn, ctx, rules, strategy, c, valid)?
        } else {
            apply_change(conn, ctx, rules, strategy, c, valid)?
        };
        if was_stamped {
            ctx.unhold(&c.entity_type, &c.entity_uuid, &c.change_id);
        }
        Ok(applied)
    }
}
