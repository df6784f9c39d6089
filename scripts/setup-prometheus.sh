#!/usr/bin/env bash
# Makes sure a Prometheus server binary is available for the monitoring integration test: one on
# PATH, else Debian's `prometheus` package (apt-get, ~10 s). Idempotent. Prints the binary's path.
set -euo pipefail
if command -v prometheus > /dev/null; then
  command -v prometheus
  exit 0
fi
SUDO=
[[ $(id -u) == 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends prometheus >&2 \
  || { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends prometheus >&2; }
command -v prometheus
