-- The private CA a node trusts for its https server (starsync-node init --ca-cert); NULL: the
-- public roots.
ALTER TABLE node_config ADD COLUMN ca_cert TEXT;
