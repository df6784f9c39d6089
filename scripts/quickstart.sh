#!/usr/bin/env bash
# Quickstart on the embedded default (SQLite + local folder): builds serval, creates a demo
# serving service in ./.serval-demo, registers the example models and shows what is configured.
# Usage: scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p serval
SERVAL=$PWD/target/release/serval
export SERVAL_HOME=${SERVAL_HOME:-$PWD/.serval-demo}
rm -rf "$SERVAL_HOME"
MODELS=$PWD/fixtures/public

set -x
"$SERVAL" create --name demo --project examples
xgb=$("$SERVAL" --json model upload --name iris-xgboost --project examples --path "$MODELS/xgb_multi_iris.json" --publish \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
lgbm=$("$SERVAL" --json model upload --name iris-lightgbm --project examples --path "$MODELS/lgbm_multi_iris.txt" --publish \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$SERVAL" model add --engine xgboost --endpoint iris --version 1 --model-id "$xgb"
"$SERVAL" model add --engine lightgbm --endpoint iris --version 2 --model-id "$lgbm"
"$SERVAL" model canary --endpoint iris_canary --weights 0.1 0.9 --input-endpoints iris/2 iris/1
"$SERVAL" metrics add --endpoint 'iris/*' --log-freq 1.0 --variable-scalar 'sepal_length=4.0/8.0/8'
"$SERVAL" model list
"$SERVAL" metrics list
"$SERVAL" list
