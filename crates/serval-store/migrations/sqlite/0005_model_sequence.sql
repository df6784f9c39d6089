-- serval control store, schema version 5: a portable insertion order for the model registry
-- (replaces SQLite's rowid as the tie-breaker between models created in the same millisecond,
-- so the shared SQL runs unchanged on PostgreSQL).

ALTER TABLE models ADD COLUMN seq INTEGER;
UPDATE models SET seq = rowid;
CREATE INDEX models_by_age ON models(created_ms, seq);
