#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are available for the store and multi-node tests, which
# start throwaway clusters themselves (as the unprivileged `postgres` user when run as root):
# Debian's `postgresql` package (apt-get, ~20 s) unless already installed. Idempotent.
# Prints the binaries' folder (the tests read it from $SERVAL_PG_BIN).
set -euo pipefail
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin=$(find_bin || true)
if [[ -z $bin || ! -x $bin/initdb ]]; then
  SUDO=
  [[ $(id -u) == 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y --no-install-recommends postgresql >&2 \
    || { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends postgresql >&2; }
  bin=$(find_bin)
fi
# The TLS tests make their certificates with the openssl command.
if ! command -v openssl > /dev/null; then
  SUDO=
  [[ $(id -u) == 0 ]] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends openssl >&2
fi
# Installing the package may start Debian's own cluster on port 5432; the tests never use it.
echo "$bin"
