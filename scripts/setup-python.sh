#!/usr/bin/env bash
# Creates (or reuses) the test venv in .venv with the packages in scripts/requirements-test.txt.
# Idempotent and quick when nothing changed: the requirements' hash is stamped in the venv.
# Prints the venv's python path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SERVAL_TEST_VENV:-$PWD/.venv}
REQ=scripts/requirements-test.txt
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
echo "$want" > "$stamp"
echo "$VENV/bin/python"
