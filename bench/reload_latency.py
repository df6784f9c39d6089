"""How fast a CLI change is served, and what reloads do to latency.

1. Propagation: 20 times, after a random pause of 0-300 ms, `serval model add --endpoint probe --version K` and poll
   POST /serve/probe/K until it answers 200; report the time from starting the CLI command
   (and from its exit) to the first 200.
2. Publish → served: an auto-update rule (max 1 version); 10 times, upload a model, then time
   `serval model publish ID` until POST /serve/auto/K answers 200.
3. Latency during reloads: wrk (1 thread, 16 connections, 10 s) on a stable endpoint, once steady
   and once while another thread changes the endpoint set every 200 ms (add, replace, remove,
   canary edits: 50 changes); report p50/p99/max and errors of both.

Run: python3 bench/reload_latency.py [path/to/serval]   (default target/release/serval; needs wrk)
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "public"
BODY = b'{"x0": 1, "x1": 2, "x2": 3, "x3": 4}'


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    serval = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release" / "serval")
    home = tempfile.mkdtemp(prefix="serval-reload-")
    env = dict(os.environ, SERVAL_HOME=home)

    def cli(*args):
        return subprocess.run([serval, *args], env=env, check=True, capture_output=True, text=True).stdout

    cli("create", "--name", "reload")
    xgb = json.loads(cli("--json", "model", "upload", "--name", "xgb", "--path", str(FIXTURES / "clearml_xgb.json")))["id"]
    lgbm = json.loads(cli("--json", "model", "upload", "--name", "lgbm", "--path", str(FIXTURES / "clearml_lgbm.txt")))["id"]
    cli("model", "add", "--engine", "xgboost", "--endpoint", "stable", "--model-id", xgb)
    server = subprocess.Popen([serval, "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "off"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = re.search(r"http://\S+", server.stdout.readline()).group(0)

    def post(path):
        try:
            request = urllib.request.Request(base + path, data=BODY, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except Exception:
            return 0

    while post("/serve/stable") != 200:
        time.sleep(0.05)

    from_start, from_exit = [], []
    random.seed(1)
    for k in range(1, 21):
        # A random pause, so changes land at random points of the server's poll cycle.
        time.sleep(random.uniform(0, 0.3))
        t0 = time.perf_counter()
        cli("model", "add", "--engine", "lightgbm", "--endpoint", "probe", "--version", str(k), "--model-id", lgbm)
        t1 = time.perf_counter()
        while post(f"/serve/probe/{k}") != 200:
            time.sleep(0.002)
        t2 = time.perf_counter()
        from_start.append(t2 - t0)
        from_exit.append(t2 - t1)
    print("propagation, CLI start -> served (s): median %.3f p90 %.3f max %.3f" % (
        percentile(from_start, 50), percentile(from_start, 90), max(from_start)))
    print("propagation, CLI exit  -> served (s): median %.3f p90 %.3f max %.3f" % (
        percentile(from_exit, 50), percentile(from_exit, 90), max(from_exit)))

    # Publish -> served: an auto-update rule serving the newest published model.
    cli("model", "auto-update", "--engine", "lightgbm", "--endpoint", "auto", "--name", "published-model",
        "--published", "--max-versions", "1")
    from_publish = []
    for k in range(1, 11):
        model = json.loads(cli("--json", "model", "upload", "--name", "published-model",
                               "--path", str(FIXTURES / "clearml_lgbm.txt")))["id"]
        time.sleep(random.uniform(0, 0.3))
        t0 = time.perf_counter()
        cli("model", "publish", model)
        while post(f"/serve/auto/{k}") != 200:
            time.sleep(0.002)
        from_publish.append(time.perf_counter() - t0)
    print("propagation, `model publish` start -> served (s): median %.3f p90 %.3f max %.3f" % (
        percentile(from_publish, 50), percentile(from_publish, 90), max(from_publish)))

    body_file = Path(home) / "body.json"
    body_file.write_bytes(BODY)

    def wrk():
        out = subprocess.run(["wrk", "-t1", "-c16", "-d10s", "-s", str(ROOT / "bench" / "lib" / "post.lua"),
                              base + "/serve/stable"], env=dict(env, BODY_FILE=str(body_file)),
                             capture_output=True, text=True, check=True).stdout
        return re.search(r"RESULT .*", out).group(0)

    print("steady:         ", wrk())
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set() and i < 50:
            step = i % 4
            if step == 0:
                cli("model", "add", "--engine", "lightgbm", "--endpoint", "churn", "--version", str(i), "--model-id", lgbm)
            elif step == 1:
                cli("model", "add", "--engine", "xgboost", "--endpoint", "churn", "--version", str(i - 1), "--model-id", xgb)
            elif step == 2:
                cli("model", "canary", "--endpoint", "c", "--weights", "1", "--input-endpoint-prefix", "churn/")
            else:
                cli("model", "remove", "--endpoint", f"churn/{i - 3}")
            i += 1
            time.sleep(0.2)

    thread = threading.Thread(target=churn)
    thread.start()
    print("during reloads: ", wrk())
    stop.set()
    thread.join()
    server.terminate()
    server.wait(timeout=30)


if __name__ == "__main__":
    main()
