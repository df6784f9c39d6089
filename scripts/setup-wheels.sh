#!/usr/bin/env bash
# Downloads the wheels the Keras test installs into a service environment (tensorflow-cpu and its
# dependencies, ~320 MB) into .cache/wheels, so the test itself never touches the network
# (it runs pip with PIP_NO_INDEX and PIP_FIND_LINKS). Idempotent: skipped when the wheel is there.
# Prints the folder on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${SERVAL_WHEELS:-$PWD/.cache/wheels}
TF=tensorflow-cpu==2.21.0
mkdir -p "$DIR"
if ! ls "$DIR"/tensorflow_cpu-2.21.0-*.whl > /dev/null 2>&1; then
  python=$(scripts/setup-python.sh)
  "$python" -m pip download --quiet --disable-pip-version-check "$TF" -d "$DIR" >&2
fi
echo "$DIR"
