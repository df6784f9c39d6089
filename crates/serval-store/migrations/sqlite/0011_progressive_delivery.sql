-- serval control store, schema version 11: progressive delivery — shadow traffic, the fleet's
-- traffic statistics, rollouts and leases.
-- A shadow copies a fraction of an endpoint's requests to a target endpoint after the endpoint
-- answered and compares the two answers. Statistics rows are written by each server for itself
-- (without bumping services.revision): counters added up per time bucket, summed by readers
-- across instances.

CREATE TABLE shadows (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    endpoint   TEXT NOT NULL,
    target     TEXT NOT NULL,
    fraction   REAL NOT NULL,
    tolerance  REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (service_id, endpoint, target)
);

CREATE TABLE stats (
    service_id  TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,              -- 'shadow'
    endpoint    TEXT NOT NULL,
    target      TEXT NOT NULL,              -- '' when the row is about one endpoint
    bucket_ms   INTEGER NOT NULL,           -- start of the bucket
    instance_id TEXT NOT NULL,
    counts      TEXT NOT NULL,              -- JSON: name -> count
    PRIMARY KEY (service_id, kind, endpoint, target, bucket_ms, instance_id)
);
CREATE INDEX stats_by_instance ON stats(instance_id, bucket_ms);

-- Rollouts: a canary's weights driven step by step from one endpoint to another (the whole
-- record, its state and its events, as JSON; changed with the service's revision).
CREATE TABLE rollouts (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    canary     TEXT NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (service_id, canary)
);

-- Leases: which server drives what (a rollout), until when; taken over once expired.
CREATE TABLE leases (
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    holder     TEXT NOT NULL,
    until_ms   INTEGER NOT NULL,
    PRIMARY KEY (service_id, name)
);
