-- serval control store, schema version 11: shadow traffic and the fleet's traffic statistics.
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
