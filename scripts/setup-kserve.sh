#!/usr/bin/env bash
# Creates (or reuses) .venv-kserve: KServe's Python SDK, for the test that its Open Inference
# Protocol clients (REST v2 and gRPC) work against serval. A venv of its own: the SDK pins
# FastAPI/Starlette versions that the test venv's MLServer does not accept.
# Idempotent: the pinned version is stamped in the venv. Prints the venv's python path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SERVAL_KSERVE_VENV:-$PWD/.venv-kserve}
PIN="kserve==0.21.0"
stamp="$VENV/.pinned"
if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$PIN" ]]; then
  echo "$VENV/bin/python"
  exit 0
fi
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$PIN" >&2
echo "$PIN" > "$stamp"
echo "$VENV/bin/python"
