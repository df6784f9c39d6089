# Shared by the load benchmarks (source it after setting ROOT, SHARED_BENCH, WORK and VENV).

# prepare_peers: the peers' venv (FastAPI, gunicorn, the model libraries) and a copy of
# ../shared/bench (it is read-only) with its benchmark models trained into $WORK/bench.
prepare_peers() {
  if [[ ! -x $VENV/bin/gunicorn ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/bench/requirements-peers.txt"
  fi
  cp -r "$SHARED_BENCH" "$WORK/bench"
  ln -sfn "$VENV" "$WORK/bench/venv"
  (cd "$WORK/bench" && OMP_NUM_THREADS=1 venv/bin/python train_models.py > "$WORK/train.log" 2>&1)
}

# wait_post URL BODY: until a POST answers 200 (60 s).
wait_post() {
  for _ in $(seq 600); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' --data-binary @"$2" "$1" || true) == 200 ]] && return 0
    sleep 0.1
  done
  echo "timeout waiting for $1" >&2; return 1
}

# iris_service SERVAL_BIN: a service in $SERVAL_HOME serving the XGBoost and LightGBM iris models
# of $WORK/bench/models on /serve/xgb_iris and /serve/lgbm_iris.
iris_service() {
  "$1" create --name bench > /dev/null
  for m in xgb_iris:xgboost:json lgbm_iris:lightgbm:txt; do
    IFS=: read -r model engine ext <<<"$m"
    id=$("$1" --json model upload --name "$model" --path "$WORK/bench/models/$model.$ext" 2>/dev/null \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    "$1" model add --engine "$engine" --endpoint "$model" --model-id "$id" > /dev/null 2>&1
  done
}
