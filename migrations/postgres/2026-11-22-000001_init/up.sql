-- The hub's own identity and the global change sequence (one row).
CREATE TABLE server_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    server_node_id TEXT NOT NULL,
    code TEXT NOT NULL,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- Registered desktop nodes (the hub itself is in server_state, not here).
CREATE TABLE sync_nodes (
    id TEXT PRIMARY KEY NOT NULL,
    code TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TEXT NOT NULL,
    last_sync_in TEXT,
    last_sync_out TEXT,
    received_packet_no BIGINT NOT NULL DEFAULT 0,
    sent_packet_no BIGINT NOT NULL DEFAULT 0,
    acked_packet_no BIGINT NOT NULL DEFAULT 0,
    -- Queue cursor: every change-log entry with seq <= acked_seq is done for this node.
    acked_seq BIGINT NOT NULL DEFAULT 0,
    -- Global sequence at registration: tombstones older than this are never sent to the node
    -- (it cannot hold those entities), so initial sync carries only live entities.
    registered_seq BIGINT NOT NULL DEFAULT 0
);

-- The entity store, which is also the change log: seq is the global sequence number of the
-- entity's latest change, so "one pending entry per entity" holds by construction.
CREATE TABLE entities (
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    data TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    is_deleted BOOLEAN NOT NULL DEFAULT FALSE,
    -- Node that produced this version (NULL: the hub, i.e. an admin or a merge).
    author_node_id TEXT,
    -- Node that already holds exactly this state and must not get it echoed back.
    holder_node_id TEXT,
    seq BIGINT NOT NULL,
    created_seq BIGINT NOT NULL,
    change_id TEXT,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (entity_type, entity_uuid)
);
CREATE UNIQUE INDEX entities_seq ON entities (seq);

-- Per-node queue rows, only where a node needs something the change log does not give it
-- (a conflict answer: the current state re-sent to the node that lost).
CREATE TABLE sync_changes (
    node_id TEXT NOT NULL REFERENCES sync_nodes (id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    seq BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (node_id, entity_type, entity_uuid)
);
CREATE INDEX sync_changes_node_seq ON sync_changes (node_id, seq);
CREATE INDEX sync_changes_entity ON sync_changes (entity_type, entity_uuid);

-- Packets the hub built for a node: what acknowledging each one settles.
CREATE TABLE sync_packets_out (
    node_id TEXT NOT NULL REFERENCES sync_nodes (id) ON DELETE CASCADE,
    packet_no BIGINT NOT NULL,
    high_seq BIGINT NOT NULL,
    change_count BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (node_id, packet_no)
);

-- Every conflict's losing (or overwritten) version.
CREATE TABLE object_version_history (
    id TEXT PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL,
    entity_uuid TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    source_node_id TEXT,
    node_id TEXT,
    change_id TEXT,
    arrival_time TEXT NOT NULL,
    serialized_data TEXT NOT NULL,
    conflict_resolution TEXT NOT NULL,
    server_version BIGINT NOT NULL,
    resolved_at TEXT,
    resolved_by TEXT
);
CREATE UNIQUE INDEX ovh_seq ON object_version_history (seq);
CREATE INDEX ovh_entity ON object_version_history (entity_type, entity_uuid);
CREATE INDEX ovh_node ON object_version_history (node_id, resolved_at);
CREATE INDEX ovh_unresolved ON object_version_history (resolved_at);
