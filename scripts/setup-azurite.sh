#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Blob emulator, npm) into .cache/azurite for the object
# storage tests. Idempotent: reinstalls only when the pinned version changes.
# Prints the path of its azurite-blob binary (the tests read it from $SERVAL_AZURITE).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.35.0
DIR=${SERVAL_AZURITE_DIR:-$PWD/.cache/azurite}
bin=$DIR/node_modules/.bin/azurite-blob
if ! command -v npm > /dev/null; then
  SUDO=
  [[ $(id -u) == 0 ]] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends nodejs npm >&2
fi
if [[ ! -x $bin || $(cat "$DIR/.version" 2>/dev/null) != "$VERSION" ]]; then
  mkdir -p "$DIR"
  (cd "$DIR" && npm install --no-audit --no-fund --silent --prefix "$DIR" "azurite@$VERSION" >&2)
  echo "$VERSION" > "$DIR/.version"
fi
echo "$bin"
