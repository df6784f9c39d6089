-- serval control store, schema version 4: the V2 gRPC port of a running instance (NULL: no gRPC).

ALTER TABLE instances ADD COLUMN grpc_port INTEGER;
