#!/usr/bin/env bash
# Single-row throughput against the machine's ceiling, in one sitting: the axum JSON echo server
# of ../shared/bench/echo and one or more serval binaries (e.g. a build of main before a change
# and one after), each serving the XGBoost and LightGBM iris models of ../shared/bench on /serve.
# Runs alternate (echo, then every binary on every model) so that a busy box affects all alike;
# prints each run and the median per server with its share of the echo ceiling, and the server's
# CPU time per request (user + system of its process over the measured run: less noisy than
# requests/s on a busy box; not for the FastAPI baseline's several processes).
#
# Usage: bench/front_door.sh NAME=PATH_TO_SERVAL [NAME=PATH ...]
#   ROUNDS=5 SECONDS_PER_RUN=5 CONNECTIONS=16 (wrk, 1 thread, 1 s warm-up per run)
#   FASTAPI=1: also the FastAPI baseline (clearml-serving's request path, gunicorn 2 workers,
#   OMP_NUM_THREADS=1, on :8080) in the same rounds
# Needs: wrk, ../shared/bench beside the repo; the peers' venv (bench/lib/peers.sh) for the models.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
WORK=${WORK:-$(mktemp -d /tmp/serval-front.XXXXXX)}
VENV=${BENCH_VENV:-$ROOT/.venv-bench}
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-5}
CONNS=${CONNECTIONS:-16}
[[ $# -ge 1 ]] || { sed -n '2,12p' "$0"; exit 2; }
# shellcheck source=lib/peers.sh
source "$ROOT/bench/lib/peers.sh"

[[ -f $WORK/bench/models/xgb_iris.json ]] || prepare_peers
BODIES=$WORK/bench/bodies
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

# The echo ceiling, built from ../shared/bench/echo (its own target folder).
ECHO_BIN=$WORK/echo-target/release/echo
if [[ ! -x $ECHO_BIN ]]; then
  (cd "$WORK/bench/echo" && CARGO_TARGET_DIR=$WORK/echo-target cargo build --release -q)
fi
ECHO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$ECHO_BIN" "127.0.0.1:$ECHO_PORT" 2> "$WORK/echo.log" &
PIDS+=($!)
ECHO_PID=$!
wait_post "http://127.0.0.1:$ECHO_PORT/serve/x" "$BODIES/A_xgb_iris.json"

# The FastAPI baseline (its harness listens on :8080).
if [[ ${FASTAPI:-0} == 1 ]]; then
  (cd "$WORK/bench" && OMP_NUM_THREADS=1 exec peers/start_fastapi.sh gunicorn2) > "$WORK/fastapi.log" 2>&1 &
  PIDS+=($!)
  wait_post http://127.0.0.1:8080/serve/xgb_iris "$BODIES/A_xgb_iris.json"
fi

# Each serval binary with its own home and the two models.
declare -A URLS SERVER_PID
NAMES=()
for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}
  NAMES+=("$name")
  home=$WORK/home-$name
  export SERVAL_HOME=$home
  [[ -d $home ]] || iris_service "$bin"
  "$bin" serve --host 127.0.0.1 --port 0 --grpc-port off > "$WORK/$name.out" 2> "$WORK/$name.log" &
  PIDS+=($!)
  SERVER_PID[$name]=$!
  for _ in $(seq 200); do grep -q http:// "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  URLS[$name]=$(grep -o 'http://[0-9.:]*' "$WORK/$name.out" | head -1)
  wait_post "${URLS[$name]}/serve/xgb_iris" "$BODIES/A_xgb_iris.json"
done
unset SERVAL_HOME

# cpu PID → the process's user + system time so far, in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# run URL BODY [PID] → "requests/s non-2xx cpu-µs-per-request" of one wrk run (1 s warm-up first;
# "-" for the CPU without a PID).
run() {
  BODY_FILE=$2 wrk -t1 -c"$CONNS" -d1s -s "$WORK/bench/lib/post.lua" "$1" > /dev/null 2>&1 || true
  local before=0 out
  [[ -n ${3:-} ]] && before=$(cpu "$3")
  out=$(BODY_FILE=$2 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$WORK/bench/lib/post.lua" "$1" 2>/dev/null \
    | sed -n 's/.*requests=\([0-9]*\).*rps=\([0-9.]*\).*err_status=\([0-9]*\).*/\2 \3 \1/p')
  if [[ -n ${3:-} ]]; then
    echo "$out $(( ($(cpu "$3") - before) * TICK_US ))" \
      | awk '{ printf "%s %s %.2f\n", $1, $2, ($3 > 0 ? $4 / $3 : 0) }'
  else
    echo "$out" | awk '{ print $1, $2, "-" }'
  fi
}

RESULTS=$WORK/runs.csv
echo "round,server,model,rps,non2xx,cpu_us_per_request" > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for model in xgb_iris lgbm_iris; do
    read -r rps bad us < <(run "http://127.0.0.1:$ECHO_PORT/serve/$model" "$BODIES/A_$model.json" "$ECHO_PID")
    echo "$round,echo,$model,$rps,$bad,$us" | tee -a "$RESULTS"
    if [[ ${FASTAPI:-0} == 1 ]]; then
      read -r rps bad us < <(run "http://127.0.0.1:8080/serve/$model" "$BODIES/A_$model.json")
      echo "$round,fastapi,$model,$rps,$bad,$us" | tee -a "$RESULTS"
    fi
    for name in "${NAMES[@]}"; do
      read -r rps bad us < <(run "${URLS[$name]}/serve/$model" "$BODIES/A_$model.json" "${SERVER_PID[$name]}")
      echo "$round,$name,$model,$rps,$bad,$us" | tee -a "$RESULTS"
    done
  done
done

python3 - "$RESULTS" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by, cpu = {}, {}
for r in rows:
    by.setdefault((r["server"], r["model"]), []).append(float(r["rps"]))
    if r["cpu_us_per_request"] not in ("", "-"):
        cpu.setdefault((r["server"], r["model"]), []).append(float(r["cpu_us_per_request"]))
    if int(r["non2xx"] or 0):
        print(f"WARNING: {r['server']} {r['model']} round {r['round']}: {r['non2xx']} non-2xx answers")
print(f"\nmedian requests/s over {len(rows) // len(by)} rounds: share of the echo ceiling (and multiple of the FastAPI baseline) in the same rounds")
for (server, model), values in sorted(by.items()):
    echo = statistics.median(by[("echo", model)])
    m = statistics.median(values)
    fastapi = by.get(("fastapi", model))
    times = f"  {m / statistics.median(fastapi):5.1f}x FastAPI" if fastapi else ""
    us = cpu.get((server, model))
    spent = f"  {statistics.median(us):5.1f} µs CPU/request (min {min(us):.1f}, max {max(us):.1f})" if us else ""
    print(f"{model:10} {server:14} {m:10,.0f}  {m / echo:6.1%}{times}  (min {min(values):,.0f}, max {max(values):,.0f}){spent}")
EOF
echo "runs: $RESULTS"
