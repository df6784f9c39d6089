#!/usr/bin/env bash
# Makes sure a docker compose implementation that can validate deploy/compose/compose.yaml offline
# (`config`, no daemon needed) is available: `docker-compose` on PATH, else Debian's
# `docker-compose` package (1.29, apt-get, ~30 s). Idempotent. Prints the command's path.
set -euo pipefail
if command -v docker-compose > /dev/null; then
  command -v docker-compose
  exit 0
fi
SUDO=
[[ $(id -u) == 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends docker-compose >&2 \
  || { $SUDO apt-get update >&2 && $SUDO apt-get install -y --no-install-recommends docker-compose >&2; }
command -v docker-compose
