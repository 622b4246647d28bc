-- Every commit on a scoped hub lists the scopes entities left in it (`seq > before`): by this
-- index a range read of the commit's own exits, instead of a walk over every exit ever made.
CREATE INDEX scope_exits_seq ON scope_exits (seq);
