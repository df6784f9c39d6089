-- serval control store on PostgreSQL, schema version 2: API keys (as SQLite's version 6).

CREATE TABLE api_keys (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    endpoints  TEXT,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    PRIMARY KEY (service_id, name)
);
