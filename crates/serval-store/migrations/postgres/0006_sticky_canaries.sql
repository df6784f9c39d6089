-- serval control store on PostgreSQL, schema version 6: sticky canaries (as SQLite's version 10).

ALTER TABLE canaries ADD COLUMN sticky TEXT;
