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

# setup NAME SHADOW: a home with the iris endpoint and, for SHADOW=slow|native, its shadow.
setup() {
  export SERVAL_HOME=$WORK/home-$1
  "$BIN" create --name shadow-bench > /dev/null
  id=$("$BIN" --json model upload --name iris --path "$ROOT/fixtures/public/xgb_multi_iris.json" 2>/dev/null \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  "$BIN" model add --engine xgboost --endpoint iris --model-id "$id" > /dev/null 2>&1
  case $2 in
    slow)
      "$BIN" model add --engine custom --endpoint slow --preprocess "$WORK/slow/preprocess.py" > /dev/null 2>&1
      "$BIN" model shadow --endpoint iris --target slow > /dev/null 2>&1 ;;
    native)
      "$BIN" model add --engine xgboost --endpoint copy --model-id "$id" > /dev/null 2>&1
      "$BIN" model shadow --endpoint iris --target copy > /dev/null 2>&1 ;;
  esac
}

declare -A URLS
SERVERS=(none slow native)
for name in "${SERVERS[@]}"; do
  setup "$name" "$name"
  "$BIN" serve --host 127.0.0.1 --port 0 --grpc-port off > "$WORK/$name.out" 2> "$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 200); do grep -q http:// "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  URLS[$name]=$(grep -o 'http://[0-9.:]*' "$WORK/$name.out" | head -1)
  for _ in $(seq 600); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "${URLS[$name]}/health/ready") == 200 ]] && break
    sleep 0.1
  done
done
unset SERVAL_HOME

# run URL → "rps p50_us p99_us non2xx" of one wrk run (1 s warm-up first).
run() {
  BODY_FILE=$BODY wrk -t1 -c"$CONNS" -d1s -s "$POST_LUA" "$1" > /dev/null 2>&1 || true
  BODY_FILE=$BODY wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$POST_LUA" "$1" 2>/dev/null \
    | sed -n 's/.*rps=\([0-9.]*\) p50_us=\([0-9]*\).*p99_us=\([0-9]*\).*err_status=\([0-9]*\).*/\1 \2 \3 \4/p'
}

RESULTS=$WORK/runs.csv
echo "round,server,rps,p50_us,p99_us,non2xx" > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for name in "${SERVERS[@]}"; do
    read -r rps p50 p99 bad < <(run "${URLS[$name]}/serve/iris")
    echo "$round,$name,$rps,$p50,$p99,$bad" | tee -a "$RESULTS"
  done
done

echo
echo "medians over $ROUNDS rounds (c=$CONNS, ${SECS}s runs):"
python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
base = None
for name in ["none", "slow", "native"]:
    mine = [r for r in rows if r["server"] == name]
    rps = statistics.median(float(r["rps"]) for r in mine)
    p50 = statistics.median(int(r["p50_us"]) for r in mine)
    p99 = statistics.median(int(r["p99_us"]) for r in mine)
    bad = sum(int(r["non2xx"]) for r in mine)
    base = base or (rps, p99)
    print(f"  {name:7s} {rps:9.0f} req/s ({rps / base[0]:.2f}x)  p50 {p50} us  p99 {p99} us ({p99 / base[1]:.2f}x)  non-2xx {bad}")
EOF
echo
echo "the endpoint's own request durations over every run, from each server's /metrics"
echo "(serval_request_duration_seconds{endpoint=\"iris\"}: admission to answer, without the client):"
for name in "${SERVERS[@]}"; do
  curl -s "${URLS[$name]}/metrics" | python3 -c '
import sys
buckets = []
for line in sys.stdin:
    if line.startswith("serval_request_duration_seconds_bucket{") and "endpoint=\"iris\"" in line:
        le = line.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
buckets.sort()
total = buckets[-1][1]
def quantile(q):
    rank, below, lower = q * total, 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = (rank - below) / max(cumulative - below, 1)
            return lower + (bound - lower) * inside
        below, lower = cumulative, bound
    return lower
print(f"  {sys.argv[1]:7s} {int(total):>9} requests  p50 {quantile(0.5) * 1e6:6.0f} us  p99 {quantile(0.99) * 1e6:6.0f} us  p99.9 {quantile(0.999) * 1e6:6.0f} us")
' "$name"
done
for name in slow native; do
  echo "shadow counts of '$name' (its /metrics):"
  curl -s "${URLS[$name]}/metrics" | grep '^serval_shadow_requests_total' | sed 's/^/  /'
done
