#!/usr/bin/env bash
# The console's browser tests: Debian's chromium (apt-get, ~20 s) and playwright-core pinned by
# crates/serval/tests/browser/package-lock.json (npm ci into .cache/browser; playwright downloads
# no browser of its own). Idempotent. Prints the node_modules folder (the tests read it from
# $SERVAL_BROWSER_MODULES) — chromium is /usr/bin/chromium ($SERVAL_CHROMIUM to use another).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD/crates/serval/tests/browser
DIR=${SERVAL_BROWSER_DIR:-$PWD/.cache/browser}
SUDO=
[[ $(id -u) == 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if [[ ! -x ${SERVAL_CHROMIUM:-/usr/bin/chromium} ]]; then
  $SUDO apt-get install -y --no-install-recommends chromium >&2 \
    || { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends chromium >&2; }
fi
if ! command -v npm > /dev/null; then
  $SUDO apt-get install -y --no-install-recommends nodejs npm >&2
fi
if ! cmp -s "$SRC/package-lock.json" "$DIR/package-lock.json" || [[ ! -d $DIR/node_modules/playwright-core ]]; then
  mkdir -p "$DIR"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$DIR/"
  (cd "$DIR" && npm ci --no-audit --no-fund --silent >&2)
fi
echo "$DIR/node_modules"
