#!/usr/bin/env bash
# What monitoring costs the endpoint it watches: the same native XGBoost iris endpoint on four
# servers — without monitoring, with every request logged to Parquet files (sample 1.0), with a
# quarter of them logged (sample 0.25), with every request logged to an object store that
# accepts connections and never answers (a stalled destination: files wait in the spool), and
# with a drift reference (every request's four features counted in ten bins each). Runs alternate between the servers in one sitting; prints
# each run's requests/s, p50 and p99, the medians, each server's own request-duration
# percentiles, and the payload counters (records written and dropped).
#
# Usage: bench/payload.sh [PATH_TO_SERVAL]   (default: target/release/serval)
#   ROUNDS=5 SECONDS_PER_RUN=5 CONNECTIONS=16 (wrk, 1 thread, 1 s warm-up per run)
#   ONLY="none stalled": only these servers; STALLED_SAMPLE=0.1: the stalled server's sample
#   (default 1.0)
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

# A stalled object store: accepts connections, reads, never answers.
STALL_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 - "$STALL_PORT" <<'EOF' &
import socket, sys, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(64)
def hold(conn):
    while conn.recv(65536):
        pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=hold, args=(conn,), daemon=True).start()
EOF
PIDS+=($!)

python3 - "$WORK/reference.csv" <<'EOF'
import random, sys
random.seed(1)
with open(sys.argv[1], "w") as out:
    out.write("f0,f1,f2,f3\n")
    for _ in range(5000):
        out.write(",".join(f"{random.gauss(m, s):.4f}" for m, s in [(5.8, .8), (3, .45), (4.3, 1.7), (1.2, .75)]) + "\n")
EOF

# setup NAME: a home with the iris endpoint and, for NAME=all|quarter, its payload log; for
# NAME=drift, its drift reference.
setup() {
  export SERVAL_HOME=$WORK/home-$1
  "$BIN" create --name payload-bench > /dev/null
  id=$("$BIN" --json model upload --name iris --path "$ROOT/fixtures/public/xgb_multi_iris.json" 2>/dev/null \
       | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  "$BIN" model add --engine xgboost --endpoint iris --model-id "$id" > /dev/null 2>&1
  case $1 in
    all) sample=1.0 ;;
    quarter) sample=0.25 ;;
    stalled)
      export AWS_ENDPOINT=http://127.0.0.1:$STALL_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
      "$BIN" logging add --endpoint iris --sample "${STALLED_SAMPLE:-1.0}" \
        --destination s3://stalled/logs > /dev/null 2>&1
      return 0 ;;
    drift)
      "$BIN" monitor reference --endpoint iris --data "$WORK/reference.csv" > /dev/null 2>&1
      return 0 ;;
    *) return 0 ;;
  esac
  "$BIN" logging add --endpoint iris --sample "$sample" \
    --destination "file://$WORK/logs-$1" > /dev/null 2>&1
}

read -r -a SERVERS <<< "${ONLY:-none all quarter stalled drift}"
# shellcheck source=bench/lib/alternate.sh
source "$ROOT/bench/lib/alternate.sh"
for name in all quarter stalled; do
  [[ " ${SERVERS[*]} " == *" $name "* ]] || continue
  echo "payload counters of '$name' (its /metrics):"
  curl -s "${URLS[$name]}/metrics" | grep '^serval_payload_' | sed 's/^/  /'
  [[ -d $WORK/logs-$name ]] && echo "  files: $(find "$WORK/logs-$name" -name '*.parquet' | wc -l), $(du -sh "$WORK/logs-$name" | cut -f1)"
  [[ $name == stalled ]] && echo "  spool (waiting for the stalled store): $(du -sh "$WORK/home-stalled/cache/payload-spool" 2>/dev/null | cut -f1)"
done
if [[ " ${SERVERS[*]} " == *" drift "* ]]; then
  echo "drift gauges of 'drift' (its /metrics):"
  curl -s "${URLS[drift]}/metrics" | grep '^serval_feature_drift.*psi' | sed 's/^/  /'
fi
