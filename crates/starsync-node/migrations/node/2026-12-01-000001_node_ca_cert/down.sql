ALTER TABLE node_config DROP COLUMN ca_cert;
