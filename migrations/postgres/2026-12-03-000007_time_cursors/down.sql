ALTER TABLE sync_nodes DROP COLUMN last_device;
DROP INDEX entities_applied_at;
DROP INDEX time_cursors_seq;
DROP TABLE time_cursors;
