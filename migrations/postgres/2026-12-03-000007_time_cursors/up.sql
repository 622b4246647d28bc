-- Time cursors (PROTOCOL §11 "cursor"): every ISO 8601 time the hub hands out as a cursor (the
-- change feed's `updatedAt`, delta sync's `last_sync_at`) with the sequence number it stands
-- for. Handed out under the writer lock, so times and sequence numbers grow together: a later
-- time never stands for an earlier point of the log (docs/design.md, "Time cursors").
CREATE TABLE time_cursors (
    at TEXT PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL
);
-- One time per point of the log: a second request for the same point gets the same time.
CREATE UNIQUE INDEX time_cursors_seq ON time_cursors (seq);

-- A time never handed out means "changes committed after that instant": resolved by the
-- commit times of the log (the oldest entry stamped after it), by index.
CREATE INDEX entities_applied_at ON entities (applied_at);

-- Delta sync's `device_id` (PROTOCOL §11.2): the node's last device, shown in its status.
ALTER TABLE sync_nodes ADD COLUMN last_device TEXT;
