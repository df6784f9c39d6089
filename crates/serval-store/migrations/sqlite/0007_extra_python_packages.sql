-- serval control store, schema version 7: packages serval installs for a service's Python
-- workers (`serval config --extra-python-packages`), as one pip requirement line.

ALTER TABLE services ADD COLUMN extra_python_packages TEXT;
