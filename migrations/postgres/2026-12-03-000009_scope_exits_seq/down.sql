DROP INDEX scope_exits_seq;
