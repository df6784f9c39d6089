-- serval control store on PostgreSQL, schema version 1: the same tables and columns as the SQLite
-- schema version 5 (migrations/sqlite), in PostgreSQL's types, plus the change notification.
-- Every table that belongs to a service is keyed by service_id; a write to any of them happens in
-- one transaction that also bumps services.revision, which running servers watch.

CREATE TABLE services (
    id                  TEXT PRIMARY KEY,          -- 32 lowercase hex characters
    name                TEXT NOT NULL,
    project             TEXT NOT NULL,
    tags                TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    created_ms          BIGINT NOT NULL,            -- unix epoch milliseconds
    revision            BIGINT NOT NULL DEFAULT 1,
    serving_base_url    TEXT,
    triton_grpc_server  TEXT,
    kafka_metric_server TEXT,
    metric_log_freq     DOUBLE PRECISION,
    python              TEXT
);

CREATE TABLE endpoints (
    service_id  TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT,
    engine      TEXT NOT NULL,
    model_id    TEXT,
    preprocess  TEXT,
    io          TEXT NOT NULL,
    aux_config  TEXT,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (service_id, url)
);

CREATE TABLE canaries (
    service_id      TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    weights         TEXT NOT NULL,
    endpoints       TEXT,
    endpoint_prefix TEXT,
    PRIMARY KEY (service_id, name)
);

CREATE TABLE auto_update_rules (
    service_id     TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint       TEXT NOT NULL,
    engine         TEXT NOT NULL,
    model_name     TEXT,
    name_regex     BOOLEAN NOT NULL DEFAULT FALSE,
    project        TEXT,
    tags           TEXT NOT NULL DEFAULT '[]',
    only_published BOOLEAN NOT NULL DEFAULT FALSE,
    max_versions   INTEGER NOT NULL DEFAULT 1,
    preprocess     TEXT,
    io             TEXT NOT NULL,
    aux_config     TEXT,
    PRIMARY KEY (service_id, endpoint)
);

CREATE TABLE metric_rules (
    service_id    TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint      TEXT NOT NULL,
    log_frequency DOUBLE PRECISION,
    variables     TEXT NOT NULL,
    PRIMARY KEY (service_id, endpoint)
);

CREATE TABLE models (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    project    TEXT,
    tags       TEXT NOT NULL DEFAULT '[]',
    framework  TEXT,
    published  BOOLEAN NOT NULL DEFAULT FALSE,
    uri        TEXT NOT NULL,
    size       BIGINT,
    sha256     TEXT,
    created_ms BIGINT NOT NULL,
    seq        BIGINT
);
CREATE INDEX models_by_name ON models(name, created_ms);
CREATE INDEX models_by_age ON models(created_ms, seq);

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    service_id   TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    host         TEXT NOT NULL,
    port         INTEGER NOT NULL,
    pid          BIGINT NOT NULL,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    revision     BIGINT NOT NULL,
    ready        BOOLEAN NOT NULL DEFAULT FALSE,
    endpoints    TEXT NOT NULL DEFAULT '{}',
    grpc_port    INTEGER
);
CREATE INDEX instances_by_service ON instances(service_id);

CREATE TABLE auto_update_versions (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    version    INTEGER NOT NULL,
    model_id   TEXT NOT NULL,
    PRIMARY KEY (service_id, endpoint, version)
);

-- Servers LISTEN on serval_changes: every committed revision bump notifies them at once with the
-- service id as payload (polling the revision stays as the fallback).
CREATE FUNCTION serval_notify_revision() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('serval_changes', NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER services_revision_notify
    AFTER UPDATE OF revision ON services
    FOR EACH ROW WHEN (OLD.revision IS DISTINCT FROM NEW.revision)
    EXECUTE FUNCTION serval_notify_revision();
