-- WatermelonDB pulls (PROTOCOL §11.1). Every pull hands out a cursor no other pull got: a fresh
-- number from the hub's sequence (`mark`), mapped to the last sequence number its snapshot saw
-- (`snapshot_seq`). "Changes since mark" are the log entries with seq > snapshot_seq.
CREATE TABLE watermelon_pulls (
    mark BIGINT PRIMARY KEY NOT NULL,
    node_id TEXT NOT NULL,
    snapshot_seq BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

-- Entities a WatermelonDB push created, with the cursor that push carried (`last_pulled_at`):
-- it names the one client that holds them, which later pulls them as `updated`, not `created`.
CREATE TABLE watermelon_created (
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    pull_mark BIGINT NOT NULL,
    PRIMARY KEY (entity_type, entity_uuid)
);

-- A pull reads one table at a time in log order.
CREATE INDEX entities_type_seq ON entities (entity_type, seq);
