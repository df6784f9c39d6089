-- serval control store, schema version 1.
-- Every table that belongs to a service is keyed by service_id; a write to any of them happens in
-- one transaction that also bumps services.revision, which running servers watch.

CREATE TABLE services (
    id                  TEXT PRIMARY KEY,          -- 32 lowercase hex characters
    name                TEXT NOT NULL,
    project             TEXT NOT NULL,
    tags                TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    created_ms          INTEGER NOT NULL,           -- unix epoch milliseconds
    revision            INTEGER NOT NULL DEFAULT 1,
    serving_base_url    TEXT,
    triton_grpc_server  TEXT,
    kafka_metric_server TEXT,
    metric_log_freq     REAL,
    python              TEXT
);

-- Static endpoints, keyed by url = name or name/version.
CREATE TABLE endpoints (
    service_id  TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT,
    engine      TEXT NOT NULL,
    model_id    TEXT,
    preprocess  TEXT,                  -- JSON CodeRef or NULL
    io          TEXT NOT NULL,         -- JSON IoSpec
    aux_config  TEXT,                  -- JSON value or NULL
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (service_id, url)
);

CREATE TABLE canaries (
    service_id      TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    weights         TEXT NOT NULL,     -- JSON array of numbers
    endpoints       TEXT,              -- JSON array of urls (fixed list) or NULL
    endpoint_prefix TEXT,              -- prefix or NULL; exactly one of the two is set
    PRIMARY KEY (service_id, name)
);

-- Auto-update ("model monitoring") rules, keyed by the base endpoint name.
CREATE TABLE auto_update_rules (
    service_id     TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint       TEXT NOT NULL,
    engine         TEXT NOT NULL,
    model_name     TEXT,
    name_regex     INTEGER NOT NULL DEFAULT 0,
    project        TEXT,
    tags           TEXT NOT NULL DEFAULT '[]',
    only_published INTEGER NOT NULL DEFAULT 0,
    max_versions   INTEGER NOT NULL DEFAULT 1,
    preprocess     TEXT,
    io             TEXT NOT NULL,
    aux_config     TEXT,
    PRIMARY KEY (service_id, endpoint)
);

-- Metric logging rules, keyed by endpoint url or "prefix*".
CREATE TABLE metric_rules (
    service_id    TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint      TEXT NOT NULL,
    log_frequency REAL,
    variables     TEXT NOT NULL,        -- JSON object: name -> {"type": ..., "buckets": ...}
    PRIMARY KEY (service_id, endpoint)
);

-- The model registry, shared by all services.
CREATE TABLE models (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    project    TEXT,
    tags       TEXT NOT NULL DEFAULT '[]',
    framework  TEXT,
    published  INTEGER NOT NULL DEFAULT 0,
    uri        TEXT NOT NULL,
    size       INTEGER,
    sha256     TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX models_by_name ON models(name, created_ms);
