-- serval control store on PostgreSQL, schema version 8: payload logs and drift references (as
-- SQLite's version 12).

CREATE TABLE payload_logs (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (service_id, endpoint)
);

CREATE TABLE drift_references (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (service_id, endpoint)
);
