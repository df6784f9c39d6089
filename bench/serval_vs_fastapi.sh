#!/usr/bin/env bash
# Load benchmark: serval vs the FastAPI baseline (clearml-serving's request path) on the XGBoost and
# LightGBM iris models of ../shared/bench, single-row bodies, wrk at concurrency 1/16/64, same
# machine, same sitting. Needs: wrk (apt-get install wrk), ../shared/bench beside the repo.
# Usage: bench/serval_vs_fastapi.sh [RESULTS_CSV]     (DURATION=12 WARMUP=2 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
WORK=${WORK:-$(mktemp -d /tmp/serval-bench.XXXXXX)}
RESULTS=${1:-$ROOT/bench/results/serval_vs_fastapi.csv}
VENV=${BENCH_VENV:-$ROOT/.venv-bench}
mkdir -p "$(dirname "$RESULTS")"
# shellcheck source=lib/peers.sh
source "$ROOT/bench/lib/peers.sh"

# 1. Peers' venv and the benchmark models (bench/lib/peers.sh).
prepare_peers
test -f "$WORK/bench/models/xgb_iris.json" -a -f "$WORK/bench/models/lgbm_iris.txt"

# 2. Baseline A: FastAPI under gunicorn with 2 workers (clearml-serving's CLEARML_USE_GUNICORN mode).
(cd "$WORK/bench" && OMP_NUM_THREADS=1 exec peers/start_fastapi.sh gunicorn2) > "$WORK/fastapi.log" 2>&1 &
BASE_PID=$!
trap 'kill $BASE_PID 2>/dev/null || true; kill ${SERVAL_PID:-0} 2>/dev/null || true' EXIT
wait_post http://127.0.0.1:8080/serve/xgb_iris "$WORK/bench/bodies/A_xgb_iris.json"
for m in xgb_iris lgbm_iris; do
  "$WORK/bench/run_bench.sh" "http://127.0.0.1:8080/serve/$m" "$WORK/bench/bodies/A_$m.json" "fastapi_gunicorn2_$m" "$RESULTS"
done
kill $BASE_PID; wait $BASE_PID 2>/dev/null || true

# 3. serval on the same model files.
cargo build --release -q -p serval --manifest-path "$ROOT/Cargo.toml"
SERVAL=$ROOT/target/release/serval
export SERVAL_HOME=$WORK/serval-home
iris_service "$SERVAL"
"$SERVAL" serve --host 127.0.0.1 --port 0 --grpc-port off > "$WORK/serval.out" 2> "$WORK/serval.log" &
SERVAL_PID=$!
for _ in $(seq 100); do grep -q http:// "$WORK/serval.out" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/serval.out")
wait_post "$URL/serve/xgb_iris" "$WORK/bench/bodies/A_xgb_iris.json"
for m in xgb_iris lgbm_iris; do
  "$WORK/bench/run_bench.sh" "$URL/serve/$m" "$WORK/bench/bodies/A_$m.json" "serval_$m" "$RESULTS"
done
echo "results: $RESULTS (work dir $WORK)"
