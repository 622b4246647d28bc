-- Field-level merge (PROTOCOL §5.1): which version and author last changed each top-level field
-- of the entity's data, as compact JSON {"d":[version,author],"f":{"field":[version,author]}}
-- (author null = the hub). NULL, for every existing row and for a version that rewrote every
-- field (creation, deletion), means "every field was last changed at the entity's current
-- version by its author", which is what the whole-document rule assumed.
ALTER TABLE entities ADD COLUMN field_versions TEXT;
