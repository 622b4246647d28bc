-- The node client's local database (starsync-node). One file per node, see docs/node.md.

-- Who this node is and where its server lives (exactly one row).
CREATE TABLE node_config (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    server_url TEXT NOT NULL,
    node_id TEXT NOT NULL,
    auth_token TEXT NOT NULL,
    server_node_id TEXT NOT NULL,
    server_code TEXT NOT NULL,
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    schema_version TEXT NOT NULL,
    packet_timeout BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    batch_size BIGINT NOT NULL,
    max_packet_bytes BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

-- Packet counters and the last sync outcome (exactly one row).
CREATE TABLE node_state (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    -- Last packet number this node generated.
    sent_packet_no BIGINT NOT NULL DEFAULT 0,
    -- Highest of this node's packets the server has applied (its acknowledgment).
    server_acked_packet_no BIGINT NOT NULL DEFAULT 0,
    -- Last server packet this node applied (what it acknowledges).
    received_packet_no BIGINT NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    last_success_at TEXT,
    last_error TEXT,
    last_error_at TEXT,
    last_export_at TEXT,
    last_import_at TEXT
);

-- The local copy of every entity this node knows (deleted ones stay as tombstones).
CREATE TABLE local_entities (
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    data TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    -- Last server version this node received for the entity (0: none).
    server_version BIGINT NOT NULL,
    -- The server has the entity (received from it, or one of our changes was acknowledged).
    server_known BOOLEAN NOT NULL,
    -- The server's state as last known here (NULL: unknown or deleted there).
    server_data TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (entity_type, entity_uuid)
);

-- Local changes on their way to the server.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    change_id TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    operation TEXT NOT NULL,
    base_version BIGINT NOT NULL,
    data TEXT,
    updated_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'failed')),
    packet_no BIGINT,
    error TEXT,
    error_reason TEXT
);
-- One pending entry per entity: a newer edit replaces the pending one.
CREATE UNIQUE INDEX outbox_one_pending ON outbox (entity_type, entity_uuid) WHERE state = 'pending';
CREATE INDEX outbox_entity ON outbox (entity_type, entity_uuid);
CREATE INDEX outbox_state ON outbox (state, id);

-- Numbered packets, byte for byte, kept until the server acknowledges them.
CREATE TABLE packets_out (
    packet_no BIGINT PRIMARY KEY NOT NULL,
    bytes BLOB NOT NULL,
    change_count BIGINT NOT NULL,
    -- The acknowledgment the packet carries (the last server packet applied when numbered).
    ack_packet_no BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    send_count BIGINT NOT NULL DEFAULT 0,
    last_sent_at TEXT
);

-- Conflicts the server reported for this node's changes.
CREATE TABLE conflicts (
    conflict_id TEXT PRIMARY KEY NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    change_id TEXT NOT NULL,
    resolution TEXT NOT NULL,
    conflict_resolution TEXT NOT NULL,
    server_version BIGINT NOT NULL,
    -- What this node had sent (NULL for a delete).
    local_data TEXT,
    reported_at TEXT NOT NULL
);
