-- serval control store, schema version 3: the versions auto-update rules serve.
-- Kept in the store so version numbers survive restarts and every server agrees on them. The
-- map is recomputed inside every write that can change it (rule edits, registry changes).

CREATE TABLE auto_update_versions (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,          -- the rule's base endpoint name
    version    INTEGER NOT NULL,
    model_id   TEXT NOT NULL,
    PRIMARY KEY (service_id, endpoint, version)
);
