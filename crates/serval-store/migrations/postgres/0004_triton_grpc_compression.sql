-- serval control store on PostgreSQL, schema version 4: gRPC compression (as SQLite's 8).

ALTER TABLE services ADD COLUMN triton_grpc_compression BIGINT;
