"""clearml's huggingface batching settings (issue 26): 200 requests from 16 clients to a batched
endpoint with `max_batch_size=64`, `preferred_batch_size=[1, 2, 4, 8, 16, 32, 64]` and a 5 s
`max_queue_delay_microseconds`, beside the same model unbatched, and — for what these keys used to
do — batched with the same delay but no preferred sizes (fewer requests: each batch waits 5 s).
Prints wall time, p50/max latency and the rows per engine call from `serval_batch_size_rows`.

    cargo build --release -p serval
    SERVAL_PYTHON=.venv/bin/python python3 bench/preferred_batching.py   # ONNX Runtime from the venv
"""
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.environ.get("SERVAL_BIN", os.path.join(ROOT, "target", "release", "serval"))
MODEL = os.path.join(ROOT, "fixtures", "public", "sklearn_mlp_digits.onnx")
ROW = json.dumps({"instances": [[i % 16 for i in range(64)]]}).encode()
PREFERRED = "dynamic_batching.preferred_batch_size=[1,2,4,8,16,32,64]"
DELAY = "dynamic_batching.max_queue_delay_microseconds=5000000"


def post(url):
    start = time.perf_counter()
    req = urllib.request.Request(url, data=ROW, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - start


def load(base, endpoint, requests, clients=16):
    latencies, lock = [], threading.Lock()
    todo = iter(range(requests))

    def client():
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            took = post(f"{base}/serve/{endpoint}")
            with lock:
                latencies.append(took)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return wall, statistics.median(latencies), latencies[-1]


def rows_per_call(base, endpoint):
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    labels = f'endpoint="{endpoint}",version=""'
    total = float(re.search(rf"serval_batch_size_rows_sum{{{labels}}} (\S+)", text).group(1))
    calls = float(re.search(rf"serval_batch_size_rows_count{{{labels}}} (\S+)", text).group(1))
    return calls, total / calls


def main():
    home = tempfile.mkdtemp()
    env = dict(os.environ, SERVAL_HOME=home, SERVAL_LOG="warn")
    run = lambda *a: subprocess.run([SERVAL, *a], env=env, check=True, capture_output=True, text=True).stdout
    run("create", "--name", "preferred")
    model = run("model", "upload", "--name", "digits", "--path", MODEL).splitlines()[0].split("ID=")[-1]
    common = ["model", "add", "--engine", "onnx", "--model-id", model]
    run(*common, "--endpoint", "plain")
    run(*common, "--endpoint", "huggingface", "--aux-config", "max_batch_size=64", PREFERRED, DELAY)
    run(*common, "--endpoint", "delay_only", "--aux-config", "max_batch_size=64", DELAY)
    proc = subprocess.Popen([SERVAL, "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port",
                             "off", "--runner-threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        for attempt in range(600):
            try:
                for endpoint in ("plain", "huggingface", "delay_only"):
                    post(f"{base}/serve/{endpoint}")
                break
            except OSError:
                if attempt == 599:
                    raise
                time.sleep(0.1)
        for endpoint, requests in [("plain", 200), ("huggingface", 200), ("delay_only", 48)]:
            wall, p50, worst = load(base, endpoint, requests)
            line = f"{endpoint:12} {requests} requests, c=16: {wall:6.2f} s, p50 {p50 * 1000:7.1f} ms, max {worst * 1000:7.1f} ms"
            if endpoint != "plain":
                calls, rows = rows_per_call(base, endpoint)
                line += f", {calls:.0f} calls, {rows:.2f} rows per call"
            print(line, flush=True)
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
