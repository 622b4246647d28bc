DROP INDEX scope_exits_entity;
