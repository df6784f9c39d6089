#!/usr/bin/env bash
# Dynamic batching, on vs off, in one sitting with alternating runs (wrk, 1 thread, closed loop):
#   - an ONNX MLP that costs over a millisecond per single-row call (bench/make_mlp.py):
#     c=64 requests/s on vs off, and p99 at c=1 on vs off (batching must not add latency);
#   - the small sklearn_mlp_digits ONNX (fixtures): c=64 on vs off.
# Each endpoint pair serves the same model file; "on" is --max-batch-size 64 (no delay).
# Needs: wrk (apt-get install wrk), the test venv (scripts/setup-python.sh).
# Usage: bench/batching.sh [RESULTS_CSV]    (DURATION=10 WARMUP=2 ROUNDS=2 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/serval-batching.XXXXXX)}
RESULTS=${1:-$ROOT/bench/results/batching.csv}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-2}
mkdir -p "$(dirname "$RESULTS")"
[[ -f $RESULTS ]] || echo "name,concurrency,rps,p50_ms,p99_ms" > "$RESULTS"

PYTHON=$("$ROOT/scripts/setup-python.sh")
cargo build --release -q -p serval --manifest-path "$ROOT/Cargo.toml"
SERVAL=$ROOT/target/release/serval
export SERVAL_HOME=$WORK/home SERVAL_PYTHON=$PYTHON

"$PYTHON" "$ROOT/bench/make_mlp.py" --out "$WORK/mlp.onnx" --check
"$SERVAL" create --name batching > /dev/null
upload() { "$SERVAL" model upload --name "$1" --path "$2" 2>/dev/null | sed -n 's/.*new Model ID=//p'; }
MLP=$(upload mlp "$WORK/mlp.onnx")
DIGITS=$(upload digits "$ROOT/fixtures/public/sklearn_mlp_digits.onnx")
add() { "$SERVAL" model add --engine onnx --endpoint "$1" --model-id "$2" "${@:3}" > /dev/null 2>&1; }
add mlp_on "$MLP" --max-batch-size 64
add mlp_off "$MLP"
add digits_on "$DIGITS" --max-batch-size 64
add digits_off "$DIGITS"

# One-row bodies.
"$PYTHON" - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
json.dump({"instances": [[0.25 * (i % 8) for i in range(256)]]}, open(f"{work}/mlp.json", "w"))
json.dump({"instances": [[float(i % 16) for i in range(64)]]}, open(f"{work}/digits.json", "w"))
PY

"$SERVAL" serve --host 127.0.0.1 --port 0 --grpc-port off > "$WORK/serve.out" 2> "$WORK/serve.log" &
SERVAL_PID=$!
trap 'kill $SERVAL_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q http:// "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/serve.out")
for _ in $(seq 300); do curl -sf "$URL/health/ready" > /dev/null && break; sleep 0.1; done

# run NAME ENDPOINT BODY CONCURRENCY: one measured wrk run after a warm-up; appends a CSV row.
run() {
  local name=$1 endpoint=$2 body=$3 c=$4
  export BODY_FILE=$body
  if (( WARMUP > 0 )); then
    wrk -t1 -c"$c" -d"${WARMUP}s" -s "$ROOT/bench/lib/post.lua" "$URL/serve/$endpoint" > /dev/null
  fi
  local line
  line=$(wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s "$ROOT/bench/lib/post.lua" "$URL/serve/$endpoint" | grep '^RESULT')
  local rps p50 p99 errors
  rps=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<< "$line")
  p50=$(sed -n 's/.* p50_ms=\([0-9.]*\).*/\1/p' <<< "$line")
  p99=$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<< "$line")
  errors=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<< "$line")
  echo "[$name] c=$c rps=$rps p50=$p50 p99=$p99 ms errors=$errors"
  echo "$name,$c,$rps,$p50,$p99" >> "$RESULTS"
  sleep 1
}

for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  run mlp_on mlp_on "$WORK/mlp.json" 64
  run mlp_off mlp_off "$WORK/mlp.json" 64
  run mlp_on mlp_on "$WORK/mlp.json" 1
  run mlp_off mlp_off "$WORK/mlp.json" 1
  run digits_on digits_on "$WORK/digits.json" 64
  run digits_off digits_off "$WORK/digits.json" 64
done
curl -s "$URL/metrics" | grep -E '^serval_batch_size_rows_(sum|count)' || true
echo "results: $RESULTS (work dir $WORK)"
