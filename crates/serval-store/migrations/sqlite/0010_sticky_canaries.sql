-- serval control store, schema version 10: sticky canaries. Where a request's key comes from
-- (`header:NAME`, `query:NAME` or `field:NAME`); NULL: the split is random per request.

ALTER TABLE canaries ADD COLUMN sticky TEXT;
