-- serval control store on PostgreSQL, schema version 3: extra Python packages (as SQLite's 7).

ALTER TABLE services ADD COLUMN extra_python_packages TEXT;
