"""Cost of metrics: requests/s of a native endpoint with metrics on vs off, from alternating runs.

    cargo build --release -p serval && python3 bench/metrics_overhead.py [--rounds 5] [--seconds 8] [--pin]

Starts two `serval serve` processes on one service — one with metrics, one with
`--disable-metrics` — and loads them in turn with wrk (16 connections, single-row bodies): off, on,
on + clearml rule, off, on, ... so machine noise hits every configuration alike. "on + rule" is an
endpoint with a `metrics add` rule sampling every request (two scalar variables). Needs wrk.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.path.join(ROOT, "target", "release", "serval")
LUA = os.path.join(ROOT, "bench", "lib", "post.lua")
MODEL = os.path.join(ROOT, "fixtures", "public", "xgb_multi_iris.json")
BODY = {"x0": 6.0, "x1": 3.4, "x2": 4.5, "x3": 1.6}

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--seconds", type=int, default=8)
parser.add_argument("--pin", action="store_true",
                    help="run the servers on CPU 0 and wrk on CPU 1 (taskset): less scheduling noise")
args = parser.parse_args()

work = tempfile.mkdtemp(prefix="serval-metrics-")
env = dict(os.environ, SERVAL_HOME=os.path.join(work, "home"), SERVAL_LOG="warn")


def cli(*argv):
    subprocess.run([SERVAL, *argv], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


cli("create", "--name", "overhead")
cli("model", "upload", "--name", "iris", "--path", MODEL)
cli("model", "add", "--engine", "xgboost", "--endpoint", "iris", "--name", "iris")
cli("model", "add", "--engine", "xgboost", "--endpoint", "iris_ruled", "--name", "iris")
cli("metrics", "add", "--endpoint", "iris_ruled", "--log-freq", "1",
    "--variable-scalar", "x0=0,2,4,6,8", "x2=0,2,4,6,8")

servers = {}
for name, flags in [("on", []), ("off", ["--disable-metrics"])]:
    pin = ["taskset", "-c", "0"] if args.pin else []
    proc = subprocess.Popen([*pin, SERVAL, "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "off", *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    servers[name] = (proc, re.search(r"http://[0-9.:]+", line).group(0))
body_file = os.path.join(work, "body.json")
with open(body_file, "w") as f:
    json.dump(BODY, f)


def ready(url):
    for _ in range(600):
        try:
            req = urllib.request.Request(url, data=json.dumps(BODY).encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("server not ready: " + url)


def wrk(url, seconds):
    pin = ["taskset", "-c", "1"] if args.pin else []
    out = subprocess.run([*pin, "wrk", "-t1", "-c16", "-d%ds" % seconds, "-s", LUA, url],
                         env=dict(os.environ, BODY_FILE=body_file), capture_output=True, text=True, check=True).stdout
    result = re.search(r"RESULT requests=\d+ rps=([0-9.]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+).*errors=(\d+)", out)
    assert result and result.group(4) == "0", out
    return float(result.group(1)), float(result.group(3))


configs = [("off", servers["off"][1] + "/serve/iris"),
           ("on", servers["on"][1] + "/serve/iris"),
           ("on + rule", servers["on"][1] + "/serve/iris_ruled")]
try:
    for _, url in configs:
        ready(url)
        wrk(url, 2)  # warm-up
    runs = {name: [] for name, _ in configs}
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else list(reversed(configs))
        for name, url in order:
            rps, p99 = wrk(url, args.seconds)
            runs[name].append(rps)
            print("round %d %-10s %9.0f rps  p99 %.2f ms" % (r + 1, name, rps, p99), flush=True)
    off = statistics.mean(runs["off"])
    print()
    print("| configuration | mean rps (%d runs) | median | cost vs off |" % args.rounds)
    print("| --- | --- | --- | --- |")
    for name, _ in configs:
        mean = statistics.mean(runs[name])
        print("| %s | %s | %s | %+.1f %% |" % (name, f"{mean:,.0f}", f"{statistics.median(runs[name]):,.0f}", 100 * (off - mean) / off))
finally:
    for proc, _ in servers.values():
        proc.terminate()
        proc.wait()
