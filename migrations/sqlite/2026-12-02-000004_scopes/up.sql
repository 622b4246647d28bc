-- Scopes (PROTOCOL §10): who may see and write what. docs/design.md, "Scopes", explains the
-- index and the cursors.

-- An entity's scope, computed from its state at every write: NULL = no scope value (seen only
-- by nodes with the scope *), '' = a global type (seen by every node), otherwise the value of
-- the type's scope field. A node's packet reads this index for its scopes only.
ALTER TABLE entities ADD COLUMN scope TEXT;
CREATE INDEX entities_scope_seq ON entities (scope, seq);

-- The entity types a node receives and may write, as a JSON array; NULL = every type.
ALTER TABLE sync_nodes ADD COLUMN types TEXT;

-- A node's scopes, each with its own cursor (a gained scope starts at 0, like registration).
-- '' is the global types' stream, which every scoped node has unless it has '*'. A node with
-- no row at all (registered before scopes were configured) sees everything, as '*'.
CREATE TABLE node_scopes (
    node_id TEXT NOT NULL REFERENCES sync_nodes (id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    -- Every entry of this scope with seq <= acked_seq is done for the node.
    acked_seq BIGINT NOT NULL,
    -- Tombstones and exits at or below since_seq predate the node's view of the scope.
    since_seq BIGINT NOT NULL,
    -- The node's sent_packet_no when the row was made: only packets numbered above it were
    -- built with this stream, so only their acknowledgment moves its cursor.
    since_packet BIGINT NOT NULL,
    PRIMARY KEY (node_id, scope)
);

-- A scope a node lost ('*' for the whole log, or any scope after a types change): the node is
-- sent DELETEs for that scope's entities it can no longer see, read from the scope's index,
-- then the row is dropped. One row per (node, scope), whatever the scope's size.
CREATE TABLE node_scope_losses (
    node_id TEXT NOT NULL REFERENCES sync_nodes (id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    cursor_seq BIGINT NOT NULL,
    -- Entities created after the loss were never held by the node.
    loss_seq BIGINT NOT NULL,
    -- The node's cursor of the scope when it lost it: older tombstones and exits are done.
    acked_at_loss BIGINT NOT NULL,
    since_packet BIGINT NOT NULL,
    PRIMARY KEY (node_id, scope)
);

-- One row each time an entity leaves a scope (its scope field changed): nodes reading that
-- scope get a DELETE unless they see the entity's new scope.
CREATE TABLE scope_exits (
    scope TEXT NOT NULL,
    seq BIGINT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, seq)
);
