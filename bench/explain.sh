#!/usr/bin/env bash
# Explained single-row requests over HTTP against the same request unexplained, in one sitting:
# the XGBoost and LightGBM fixture models of ../shared/fixtures served on /serve, each asked for one
# fixture row with and without `?explain=true` (wrk, 1 thread, c=16 for requests/s and c=1 for the
# median latency), runs alternating so that a busy box affects all alike. Then the libraries' own
# single-row contributions called from Python (bench/python_predict.py --explain), for the ratio.
#
# Usage: bench/explain.sh [SERVAL_BIN]   (default target/release/serval)
#   ROUNDS=3 SECONDS_PER_RUN=4 MODELS="xgb_multi_iris ..." WORK=/tmp/dir
# Needs: wrk; the test venv (.venv, scripts/setup-python.sh) for the libraries' figures.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(realpath "${1:-$ROOT/target/release/serval}")
FIXTURES=${FIXTURES:-$ROOT/../shared/fixtures/public}
WORK=${WORK:-$(mktemp -d /tmp/serval-explain.XXXXXX)}
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-4}
MODELS=${MODELS:-xgb_reg_diabetes xgb_bin_breast_cancer xgb_multi_iris lgbm_reg_diabetes lgbm_bin_breast_cancer lgbm_multi_iris}
PY=${SERVAL_PYTHON:-$ROOT/.venv/bin/python}
export SERVAL_HOME=$WORK/home
PID=
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null || true' EXIT

if [[ ! -d $SERVAL_HOME ]]; then
  "$BIN" create --name explain > /dev/null
  for model in $MODELS; do
    case $model in
      xgb_*) engine=xgboost; file=$FIXTURES/$model.json ;;
      lgbm_*) engine=lightgbm; file=$FIXTURES/$model.txt ;;
    esac
    id=$("$BIN" --json model upload --name "$model" --path "$file" 2>/dev/null \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    "$BIN" model add --engine "$engine" --endpoint "$model" --model-id "$id" > /dev/null 2>&1
  done
fi
# One fixture row per model ("single" batch of refs.json) as a clearml body.
for model in $MODELS; do
  python3 - "$FIXTURES/refs.json" "$model" > "$WORK/$model.json" <<'EOF'
import json, sys
refs = json.load(open(sys.argv[1]))
rows = refs["inputs"][refs["models"][sys.argv[2]]["inputs"]]["single"]["data"]
print(json.dumps({"instances": rows[:1]}))
EOF
done

"$BIN" serve --host 127.0.0.1 --port 0 --grpc-port off > "$WORK/serve.out" 2> "$WORK/serve.log" &
PID=$!
for _ in $(seq 300); do grep -q http:// "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(grep -o 'http://[0-9.:]*' "$WORK/serve.out" | head -1)
for model in $MODELS; do
  for _ in $(seq 300); do
    curl -sf -o /dev/null -H 'Content-Type: application/json' --data-binary @"$WORK/$model.json" \
      "$URL/serve/$model?explain=true" && break
    sleep 0.1
  done
done

# run MODEL QUERY CONNECTIONS: prints "rps p50_ms"
run() {
  BODY_FILE=$WORK/$1.json wrk -t1 -c"$3" -d"${SECS}s" -s "$ROOT/bench/lib/post.lua" \
    "$URL/serve/$1$2" | awk '/^RESULT/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
      if (r["errors"] != 0) { print "errors: " r["errors"] > "/dev/stderr"; exit 1 }
      print r["rps"], r["p50_ms"] }'
}

echo "round,model,explained,c16_rps,c1_p50_ms" > "$WORK/runs.csv"
for round in $(seq "$ROUNDS"); do
  for model in $MODELS; do
    for query in "" "?explain=true"; do
      read -r rps _ < <(run "$model" "$query" 16)
      read -r _ p50 < <(run "$model" "$query" 1)
      line="$round,$model,$([[ -n $query ]] && echo yes || echo no),$rps,$p50"
      echo "$line" | tee -a "$WORK/runs.csv"
    done
  done
done
kill "$PID"; PID=

echo
echo "median over $ROUNDS rounds: c=16 requests/s and c=1 median latency, plain → explained"
python3 - "$WORK/runs.csv" <<'EOF'
import csv, statistics, sys
runs = list(csv.DictReader(open(sys.argv[1])))
for model in dict.fromkeys(r["model"] for r in runs):
    def med(explained, key):
        return statistics.median(float(r[key]) for r in runs if r["model"] == model and r["explained"] == explained)
    print(f"{model:24} {med('no', 'c16_rps'):9,.0f} → {med('yes', 'c16_rps'):9,.0f} req/s   "
          f"p50 {med('no', 'c1_p50_ms') * 1000:5.0f} → {med('yes', 'c1_p50_ms') * 1000:5.0f} µs")
EOF
if [[ -x $PY ]]; then
  echo
  echo "the libraries' own contributions, called from Python (one thread):"
  OMP_NUM_THREADS=1 "$PY" "$ROOT/bench/python_predict.py" --explain
fi
