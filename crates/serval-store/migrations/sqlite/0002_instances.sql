-- serval control store, schema version 2: running server instances and what they serve.
-- Status writes do not bump services.revision (they are not configuration).

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    service_id   TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    host         TEXT NOT NULL,
    port         INTEGER NOT NULL,
    pid          INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    revision     INTEGER NOT NULL,           -- the service revision the instance serves
    ready        INTEGER NOT NULL DEFAULT 0,
    endpoints    TEXT NOT NULL DEFAULT '{}'  -- JSON: url -> EndpointStatus
);
CREATE INDEX instances_by_service ON instances(service_id);
