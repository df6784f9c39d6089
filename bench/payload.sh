#!/usr/bin/env bash
# What a payload log costs the endpoint it logs: the same native XGBoost iris endpoint on three
# servers — without a log, with every request logged to Parquet files (sample 1.0), and with a
# quarter of them logged (sample 0.25). Runs alternate between the servers in one sitting; prints
# each run's requests/s, p50 and p99, the medians, each server's own request-duration
# percentiles, and the payload counters (records written and dropped).
#
# Usage: bench/payload.sh [PATH_TO_SERVAL]   (default: target/release/serval)
#   ROUNDS=5 SECONDS_PER_RUN=5 CONNECTIONS=16 (wrk, 1 thread, 1 s warm-up per run)
# Needs: wrk.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/serval}
WORK=${WORK:-$(mktemp -d /tmp/serval-payload.XXXXXX)}
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-5}
CONNS=${CONNECTIONS:-16}
POST_LUA=$ROOT/../shared/bench/lib/post.lua
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

BODY=$WORK/body.json
echo '{"x0": 5.1, "x1": 3.5, "x2": 1.4, "x3": 0.2}' > "$BODY"

# setup NAME: a home with the iris endpoint and, for NAME=all|quarter, its payload log.
setup() {
  export SERVAL_HOME=$WORK/home-$1
  "$BIN" create --name payload-bench > /dev/null
  id=$("$BIN" --json model upload --name iris --path "$ROOT/fixtures/public/xgb_multi_iris.json" 2>/dev/null \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  "$BIN" model add --engine xgboost --endpoint iris --model-id "$id" > /dev/null 2>&1
  case $1 in
    all) sample=1.0 ;;
    quarter) sample=0.25 ;;
    *) return 0 ;;
  esac
  "$BIN" logging add --endpoint iris --sample "$sample" \
    --destination "file://$WORK/logs-$1" > /dev/null 2>&1
}

SERVERS=(none all quarter)
# shellcheck source=bench/lib/alternate.sh
source "$ROOT/bench/lib/alternate.sh"
for name in all quarter; do
  echo "payload counters of '$name' (its /metrics):"
  curl -s "${URLS[$name]}/metrics" | grep '^serval_payload_' | sed 's/^/  /'
  echo "  files: $(find "$WORK/logs-$name" -name '*.parquet' | wc -l), $(du -sh "$WORK/logs-$name" | cut -f1)"
done
