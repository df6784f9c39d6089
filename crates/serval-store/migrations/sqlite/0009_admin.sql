-- serval control store, schema version 9: admin keys and the audit trail.
-- A key's role: 'infer' (inference and reads) or 'admin' (also the admin API's writes).
-- The audit trail: every write to services and the registry, with who made it (an API key's
-- name, or 'local' for the CLI on the store) and the service revision it resulted in.

ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'infer';

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    key_name   TEXT NOT NULL,
    operation  TEXT NOT NULL,
    target     TEXT NOT NULL,
    service_id TEXT,
    revision   INTEGER
);
CREATE INDEX audit_by_time ON audit(time_ms);
