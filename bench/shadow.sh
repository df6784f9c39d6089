#!/usr/bin/env bash
# What a shadow costs the endpoint it copies: the same native XGBoost iris endpoint on three
# servers — without a shadow, with every request copied to a Python target that takes 1 s per
# request (the queue fills; copies are dropped and counted), and with every request copied to a
# native copy of the model (every copy made and compared). Runs alternate between the servers in
# one sitting; prints each run's requests/s, p50 and p99, then the medians.
#
# Usage: bench/shadow.sh [PATH_TO_SERVAL]   (default: target/release/serval)
#   ROUNDS=5 SECONDS_PER_RUN=5 CONNECTIONS=16 (wrk, 1 thread, 1 s warm-up per run)
# Needs: wrk; the test venv's Python for the slow target (SERVAL_PYTHON, default .venv/bin/python).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/release/serval}
WORK=${WORK:-$(mktemp -d /tmp/serval-shadow.XXXXXX)}
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-5}
CONNS=${CONNECTIONS:-16}
export SERVAL_PYTHON=${SERVAL_PYTHON:-$ROOT/.venv/bin/python}
POST_LUA=$ROOT/../shared/bench/lib/post.lua
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

BODY=$WORK/body.json
echo '{"x0": 5.1, "x1": 3.5, "x2": 1.4, "x3": 0.2}' > "$BODY"
mkdir -p "$WORK/slow"
cat > "$WORK/slow/preprocess.py" <<'EOF'
import time


class Preprocess:
    def process(self, data, state, collect_custom_statistics_fn=None):
        time.sleep(1.0)
        return {"y": [0]}
EOF

# setup NAME: a home with the iris endpoint and, for NAME=slow|native, its shadow.
setup() {
  export SERVAL_HOME=$WORK/home-$1
  "$BIN" create --name shadow-bench > /dev/null
  id=$("$BIN" --json model upload --name iris --path "$ROOT/fixtures/public/xgb_multi_iris.json" 2>/dev/null \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  "$BIN" model add --engine xgboost --endpoint iris --model-id "$id" > /dev/null 2>&1
  case $1 in
    slow)
      "$BIN" model add --engine custom --endpoint slow --preprocess "$WORK/slow/preprocess.py" > /dev/null 2>&1
      "$BIN" model shadow --endpoint iris --target slow > /dev/null 2>&1 ;;
    native)
      "$BIN" model add --engine xgboost --endpoint copy --model-id "$id" > /dev/null 2>&1
      "$BIN" model shadow --endpoint iris --target copy > /dev/null 2>&1 ;;
  esac
}

SERVERS=(none slow native)
# shellcheck source=bench/lib/alternate.sh
source "$ROOT/bench/lib/alternate.sh"
for name in slow native; do
  echo "shadow counts of '$name' (its /metrics):"
  curl -s "${URLS[$name]}/metrics" | grep '^serval_shadow_requests_total' | sed 's/^/  /'
done
