ALTER TABLE entities DROP COLUMN field_versions;
