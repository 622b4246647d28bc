DROP TABLE conflicts;
DROP TABLE packets_out;
DROP TABLE outbox;
DROP TABLE local_entities;
DROP TABLE node_state;
DROP TABLE node_config;
