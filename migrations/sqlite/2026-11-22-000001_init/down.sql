DROP TABLE object_version_history;
DROP TABLE sync_packets_out;
DROP TABLE sync_changes;
DROP TABLE entities;
DROP TABLE sync_nodes;
DROP TABLE server_state;
