-- serval control store, schema version 6: API keys for inference (`serval auth`). Only the
-- sha256 of a key is stored. Keys belong to a service: a change bumps its revision, so every
-- server picks up a new or revoked key with its next reload.

CREATE TABLE api_keys (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    endpoints  TEXT,              -- a name or "prefix*"; NULL: every endpoint
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    PRIMARY KEY (service_id, name)
);
