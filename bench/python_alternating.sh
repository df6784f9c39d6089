#!/usr/bin/env bash
# The sklearn example on serval (default Python workers: one per core) vs the FastAPI baseline,
# both servers up at once and measured in alternation (baseline, serval, baseline, ...) at one
# concurrency, so that the machine's drift between runs hits both alike.
# Needs what bench/python_vs_fastapi.sh needs. Usage: bench/python_alternating.sh [RESULTS_CSV]
# (ROUNDS=4 C=16 DURATION=10 WARMUP=2 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
WORK=${WORK:-$(mktemp -d /tmp/serval-bench.XXXXXX)}
RESULTS=${1:-$ROOT/bench/results/python_alternating.csv}
VENV=${BENCH_VENV:-$ROOT/.venv-bench}
ROUNDS=${ROUNDS:-4}
C=${C:-16}
export DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} CONCURRENCIES=$C
mkdir -p "$(dirname "$RESULTS")"
# shellcheck source=lib/peers.sh
source "$ROOT/bench/lib/peers.sh"

PYTHON=$("$ROOT/scripts/setup-python.sh")
prepare_peers
MODEL=$WORK/bench/models/sklearn_lr.pkl
BODY=$WORK/bench/bodies/A_sklearn_lr.json
cargo build --release -q -p serval --manifest-path "$ROOT/Cargo.toml"
SERVAL=$ROOT/target/release/serval
export SERVAL_HOME=$WORK/serval-home SERVAL_PYTHON=$PYTHON
"$SERVAL" create --name bench > /dev/null
"$SERVAL" model upload --name sklearn_lr --path "$MODEL" > /dev/null 2>&1
"$SERVAL" model add --engine sklearn --endpoint sklearn_lr --name sklearn_lr \
  --preprocess "$ROOT/examples/sklearn/preprocess.py" > /dev/null 2>&1

(cd "$WORK/bench" && OMP_NUM_THREADS=1 exec peers/start_fastapi.sh gunicorn2) > "$WORK/fastapi.log" 2>&1 &
BASE_PID=$!
"$SERVAL" serve --host 127.0.0.1 --port 0 --grpc-port off > "$WORK/serval.out" 2> "$WORK/serval.log" &
SERVAL_PID=$!
trap 'kill $BASE_PID $SERVAL_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q http:// "$WORK/serval.out" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/serval.out")
wait_post http://127.0.0.1:8080/serve/sklearn_lr "$BODY"
wait_post "$URL/serve/sklearn_lr" "$BODY"
for round in $(seq "$ROUNDS"); do
  "$WORK/bench/run_bench.sh" http://127.0.0.1:8080/serve/sklearn_lr "$BODY" fastapi_gunicorn2_sklearn_lr "$RESULTS"
  "$WORK/bench/run_bench.sh" "$URL/serve/sklearn_lr" "$BODY" serval_pydefault_sklearn_lr "$RESULTS"
done
echo "results: $RESULTS (work dir $WORK)"
