# Alternating load on several serval servers in one sitting, sourced by bench/shadow.sh and
# bench/payload.sh. The caller sets BIN, WORK, ROUNDS, SECS, CONNS, BODY, ROOT, POST_LUA, PIDS,
# SERVERS (names) and a function `setup NAME` that prepares SERVAL_HOME for server NAME; the
# endpoint under load is /serve/iris. Prints each run's requests/s, p50 and p99, the medians,
# then each server's own request-duration percentiles (from its /metrics).

declare -A URLS
for name in "${SERVERS[@]}"; do
  setup "$name"
  "$BIN" serve --host 127.0.0.1 --port 0 --grpc-port off ${SERVE_FLAGS:-} > "$WORK/$name.out" 2> "$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 200); do grep -q http:// "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  URLS[$name]=$(grep -o 'http://[0-9.:]*' "$WORK/$name.out" | head -1)
  for _ in $(seq 600); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "${URLS[$name]}/health/ready") == 200 ]] && break
    sleep 0.1
  done
done
unset SERVAL_HOME

# run URL → "rps p50_us p99_us non2xx" of one wrk run (1 s warm-up first).
run() {
  BODY_FILE=$BODY wrk -t1 -c"$CONNS" -d1s -s "$POST_LUA" "$1" > /dev/null 2>&1 || true
  BODY_FILE=$BODY wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$POST_LUA" "$1" 2>/dev/null \
    | sed -n 's/.*rps=\([0-9.]*\) p50_us=\([0-9]*\).*p99_us=\([0-9]*\).*err_status=\([0-9]*\).*/\1 \2 \3 \4/p'
}

RESULTS=$WORK/runs.csv
echo "round,server,rps,p50_us,p99_us,non2xx" > "$RESULTS"
for round in $(seq "$ROUNDS"); do
  for name in "${SERVERS[@]}"; do
    read -r rps p50 p99 bad < <(run "${URLS[$name]}/serve/iris")
    echo "$round,$name,$rps,$p50,$p99,$bad" | tee -a "$RESULTS"
  done
done

echo
echo "medians over $ROUNDS rounds (c=$CONNS, ${SECS}s runs):"
python3 - "$RESULTS" "${SERVERS[@]}" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
base = None
for name in sys.argv[2:]:
    mine = [r for r in rows if r["server"] == name]
    rps = statistics.median(float(r["rps"]) for r in mine)
    p50 = statistics.median(int(r["p50_us"]) for r in mine)
    p99 = statistics.median(int(r["p99_us"]) for r in mine)
    bad = sum(int(r["non2xx"]) for r in mine)
    base = base or (rps, p99)
    print(f"  {name:7s} {rps:9.0f} req/s ({rps / base[0]:.2f}x)  p50 {p50} us  p99 {p99} us ({p99 / base[1]:.2f}x)  non-2xx {bad}")
EOF
echo
echo "the endpoint's own request durations over every run, from each server's /metrics"
echo "(serval_request_duration_seconds{endpoint=\"iris\"}: admission to answer, without the client):"
for name in "${SERVERS[@]}"; do
  curl -s "${URLS[$name]}/metrics" | python3 -c '
import sys
buckets = []
for line in sys.stdin:
    if line.startswith("serval_request_duration_seconds_bucket{") and "endpoint=\"iris\"" in line:
        le = line.split("le=\"")[1].split("\"")[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
buckets.sort()
total = buckets[-1][1]
def quantile(q):
    rank, below, lower = q * total, 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = (rank - below) / max(cumulative - below, 1)
            return lower + (bound - lower) * inside
        below, lower = cumulative, bound
    return lower
print(f"  {sys.argv[1]:7s} {int(total):>9} requests  p50 {quantile(0.5) * 1e6:6.0f} us  p99 {quantile(0.99) * 1e6:6.0f} us  p99.9 {quantile(0.999) * 1e6:6.0f} us")
' "$name"
done
