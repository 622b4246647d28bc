DROP TABLE scope_exits;
DROP TABLE node_scope_losses;
DROP TABLE node_scopes;
DROP INDEX entities_scope_seq;
ALTER TABLE sync_nodes DROP COLUMN types;
ALTER TABLE entities DROP COLUMN scope;
