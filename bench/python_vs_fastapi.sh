#!/usr/bin/env bash
# Load benchmark of the Python path: the sklearn example endpoint (upstream-style preprocess.py +
# the pickled LogisticRegression) on serval's Python workers vs the FastAPI baseline of
# ../shared/bench (clearml-serving's request path, gunicorn 2 workers) on the same model file,
# wrk at concurrency 1/16/64, same sitting. Then the worker restart time: SIGKILL the worker,
# time until the endpoint answers 200 again (bench/worker_restart.py).
# Needs: wrk (apt-get install wrk), ../shared/bench beside the repo, the test venv (.venv).
# Usage: bench/python_vs_fastapi.sh [RESULTS_CSV]     (DURATION=12 WARMUP=2 by default)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
WORK=${WORK:-$(mktemp -d /tmp/serval-bench.XXXXXX)}
RESULTS=${1:-$ROOT/bench/results/python_vs_fastapi.csv}
VENV=${BENCH_VENV:-$ROOT/.venv-bench}
mkdir -p "$(dirname "$RESULTS")"
# shellcheck source=lib/peers.sh
source "$ROOT/bench/lib/peers.sh"

PYTHON=$("$ROOT/scripts/setup-python.sh")
prepare_peers
MODEL=$WORK/bench/models/sklearn_lr.pkl
BODY=$WORK/bench/bodies/A_sklearn_lr.json
test -f "$MODEL"

# 1. Baseline A: FastAPI under gunicorn with 2 workers.
(cd "$WORK/bench" && OMP_NUM_THREADS=1 exec peers/start_fastapi.sh gunicorn2) > "$WORK/fastapi.log" 2>&1 &
BASE_PID=$!
trap 'kill $BASE_PID 2>/dev/null || true; kill ${SERVAL_PID:-0} 2>/dev/null || true' EXIT
wait_post http://127.0.0.1:8080/serve/sklearn_lr "$BODY"
"$WORK/bench/run_bench.sh" http://127.0.0.1:8080/serve/sklearn_lr "$BODY" fastapi_gunicorn2_sklearn_lr "$RESULTS"
kill $BASE_PID; wait $BASE_PID 2>/dev/null || true

# 2. serval: the sklearn example's preprocess.py and the same pickle, 1 Python worker and the
#    default (one per core).
cargo build --release -q -p serval --manifest-path "$ROOT/Cargo.toml"
SERVAL=$ROOT/target/release/serval
export SERVAL_HOME=$WORK/serval-home SERVAL_PYTHON=$PYTHON
"$SERVAL" create --name bench > /dev/null
"$SERVAL" model upload --name sklearn_lr --path "$MODEL" > /dev/null 2>&1
"$SERVAL" model add --engine sklearn --endpoint sklearn_lr --name sklearn_lr \
  --preprocess "$ROOT/examples/sklearn/preprocess.py" > /dev/null 2>&1
for workers in 1 default; do
  flags=()
  [[ $workers != default ]] && flags=(--python-workers "$workers")
  "$SERVAL" serve --host 127.0.0.1 --port 0 --grpc-port off "${flags[@]}" > "$WORK/serval.out" 2> "$WORK/serval.log" &
  SERVAL_PID=$!
  for _ in $(seq 100); do grep -q http:// "$WORK/serval.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(grep -o 'http://[0-9.:]*' "$WORK/serval.out")
  wait_post "$URL/serve/sklearn_lr" "$BODY"
  "$WORK/bench/run_bench.sh" "$URL/serve/sklearn_lr" "$BODY" "serval_py${workers}_sklearn_lr" "$RESULTS"
  if [[ $workers == 1 ]]; then
    "$PYTHON" "$ROOT/bench/worker_restart.py" --server-pid $SERVAL_PID --url "$URL/serve/sklearn_lr" --body "$BODY"
  fi
  kill $SERVAL_PID; wait $SERVAL_PID 2>/dev/null || true
done
echo "results: $RESULTS (work dir $WORK)"
