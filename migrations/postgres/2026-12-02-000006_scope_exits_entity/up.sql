-- A WatermelonDB pull asks, for the entities of one page, which scope each was in at the
-- client's last pull: the first exit after that point, found by entity (PROTOCOL §10/§11.1).
CREATE INDEX scope_exits_entity ON scope_exits (entity_type, entity_uuid, seq);
