#!/usr/bin/env bash
# Creates (or reuses) the test venv in .venv with the packages in scripts/requirements-test.txt
# and the repository's Python client (clients/python, installed as a user would: pip install).
# Idempotent and quick when nothing changed: the inputs' hash is stamped in the venv.
# Prints the venv's python path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SERVAL_TEST_VENV:-$PWD/.venv}
REQ=scripts/requirements-test.txt
stamp="$VENV/.requirements.sha256"
want=$( (sha256sum "$REQ"; find clients/python -type f \( -name '*.py' -o -name '*.toml' -o -name '*.md' -o -name py.typed \) -not -path '*/build/*' | sort | xargs sha256sum) | sha256sum | cut -d' ' -f1)
if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./clients/python >&2
rm -rf clients/python/build clients/python/src/*.egg-info
echo "$want" > "$stamp"
echo "$VENV/bin/python"
