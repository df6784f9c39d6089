-- serval control store, schema version 8: gzip on the gRPC calls of forwarded `triton`
-- endpoints (`serval config --triton-grpc-compression true|false`; NULL: off).

ALTER TABLE services ADD COLUMN triton_grpc_compression INTEGER;
