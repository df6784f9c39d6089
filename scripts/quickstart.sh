#!/usr/bin/env bash
# Quickstart on the embedded default (SQLite + local folder): builds serval, creates a demo
# serving service in ./.serval-demo, registers the example models — native XGBoost/LightGBM with a
# canary, and clearml-serving's sklearn example (preprocess.py + pickled model, in a Python worker
# from the project's venv, made by scripts/setup-python.sh) — and serves them on port 8080, with
# the Open Inference Protocol's gRPC on 8081 (PORT=... / GRPC_PORT=... to change). Then, from
# another terminal:
#   curl -X POST localhost:8080/serve/iris -H 'Content-Type: application/json' \
#        -d '{"x0": 6.0, "x1": 3.4, "x2": 4.5, "x3": 1.6}'
# Usage: scripts/quickstart.sh        (Ctrl-C stops the server)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p serval
SERVAL=$PWD/target/release/serval
export SERVAL_PYTHON=${SERVAL_PYTHON:-$(scripts/setup-python.sh)}
export SERVAL_HOME=${SERVAL_HOME:-$PWD/.serval-demo}
rm -rf "$SERVAL_HOME"
MODELS=$PWD/fixtures/public
"$SERVAL_PYTHON" examples/sklearn/train_model.py --out "$SERVAL_HOME/train" > /dev/null

set -x
"$SERVAL" create --name demo --project examples
xgb=$("$SERVAL" --json model upload --name iris-xgboost --project examples --path "$MODELS/xgb_multi_iris.json" --publish \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
lgbm=$("$SERVAL" --json model upload --name iris-lightgbm --project examples --path "$MODELS/lgbm_multi_iris.txt" --publish \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$SERVAL" model add --engine xgboost --endpoint iris --version 1 --model-id "$xgb"
"$SERVAL" model add --engine lightgbm --endpoint iris --version 2 --model-id "$lgbm"
"$SERVAL" model canary --endpoint iris_canary --weights 0.1 0.9 --input-endpoints iris/2 iris/1
"$SERVAL" model upload --name "train sklearn model - sklearn-model" --project "serving examples" \
  --framework scikitlearn --path "$SERVAL_HOME/train/sklearn-model.pkl"
"$SERVAL" model add --engine sklearn --endpoint test_model_sklearn --preprocess examples/sklearn/preprocess.py \
  --name "train sklearn model - sklearn-model" --project "serving examples"
"$SERVAL" metrics add --endpoint 'iris/*' --log-freq 1.0 --variable-scalar 'x0=4.0/8.0/8'
"$SERVAL" model list
"$SERVAL" metrics list
set +x
PORT=${PORT:-8080}
GRPC_PORT=${GRPC_PORT:-8081}
cat <<MSG

Serving on http://127.0.0.1:$PORT — try, from another terminal:
  curl -X POST localhost:$PORT/serve/iris -H 'Content-Type: application/json' -d '{"x0": 6.0, "x1": 3.4, "x2": 4.5, "x3": 1.6}'
  curl -X POST localhost:$PORT/serve/iris/1 -H 'Content-Type: application/json' -d '{"instances": [[6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]}'
  curl -X POST localhost:$PORT/serve/iris_canary -H 'Content-Type: application/json' -d '{"x0": 6.0, "x1": 3.4, "x2": 4.5, "x3": 1.6}'
  curl -X POST localhost:$PORT/serve/test_model_sklearn -H 'Content-Type: application/json' -d '{"x0": 1, "x1": 2}'
  curl -s localhost:$PORT/metrics | grep -E '^(serval_requests_total|iris_.*:x0_bucket)'
Open Inference Protocol (KServe V2) — REST on :$PORT, gRPC on :$GRPC_PORT:
  curl localhost:$PORT/v2/models/iris
  curl -X POST localhost:$PORT/v2/models/iris/versions/1/infer -d '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.0, 3.4, 4.5, 1.6]}]}'
  $SERVAL_PYTHON examples/v2/client.py localhost:$PORT localhost:$GRPC_PORT      # tritonclient, HTTP and gRPC
MSG
exec "$SERVAL" serve --port "$PORT" --grpc-port "$GRPC_PORT"
