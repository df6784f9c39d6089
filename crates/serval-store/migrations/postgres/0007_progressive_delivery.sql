-- serval control store on PostgreSQL, schema version 7: shadow traffic and the fleet's traffic
-- statistics (as SQLite's version 11).

CREATE TABLE shadows (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    target     TEXT NOT NULL,
    fraction   DOUBLE PRECISION NOT NULL,
    tolerance  DOUBLE PRECISION NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (service_id, endpoint, target)
);

CREATE TABLE stats (
    service_id  TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    target      TEXT NOT NULL,
    bucket_ms   BIGINT NOT NULL,
    instance_id TEXT NOT NULL,
    counts      TEXT NOT NULL,
    PRIMARY KEY (service_id, kind, endpoint, target, bucket_ms, instance_id)
);
CREATE INDEX stats_by_instance ON stats(instance_id, bucket_ms);

CREATE TABLE rollouts (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    canary     TEXT NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (service_id, canary)
);

CREATE TABLE leases (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    until_ms   BIGINT NOT NULL,
    PRIMARY KEY (service_id, name)
);
