-- serval control store on PostgreSQL, schema version 5: admin keys and the audit trail (as
-- SQLite's version 9).

ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'infer';

CREATE TABLE audit (
    seq        BIGSERIAL PRIMARY KEY,
    time_ms    BIGINT NOT NULL,
    key_name   TEXT NOT NULL,
    operation  TEXT NOT NULL,
    target     TEXT NOT NULL,
    service_id TEXT,
    revision   BIGINT
);
CREATE INDEX audit_by_time ON audit(time_ms);
