-- Simple push (PROTOCOL §11.4): the change-queue rows a node pushed and the hub applied, by
-- the row's own id (the client's idempotency key), so a row pushed again is applied once.
-- Rows rejected by a rule are not kept: they were never applied.
CREATE TABLE push_rows (
    node_id TEXT NOT NULL,
    row_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_uuid TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (node_id, row_id)
);
