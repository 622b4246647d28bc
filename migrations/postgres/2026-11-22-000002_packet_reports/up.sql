-- What applying a node packet reported (rejected changes, conflicts), kept for the newest
-- packets of each node so the answer to a resent duplicate repeats it: a node whose answer was
-- lost still learns which of its changes failed.
CREATE TABLE sync_packets_in (
    node_id TEXT NOT NULL REFERENCES sync_nodes (id) ON DELETE CASCADE,
    packet_no BIGINT NOT NULL,
    report TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (node_id, packet_no)
);
