-- serval control store, schema version 12: model monitoring. Payload logs — a sampled fraction of
-- an endpoint's requests (url or `prefix*`) written as Parquet files to a destination — and drift
-- references: per-feature distributions live traffic is compared with (each the whole record as
-- JSON; changed with the service's revision).

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
