"""Hostile-input figures for docs/reliability.md, on a release build:

  1. two gzip bodies of ~200 KB that decode to 42 M values each (the amplification reproduction),
     sent at once to /serve and /v2: status, time to answer, the server's peak RSS;
  2. /health/live latency while they are being read (polled every 5 ms);
  3. RSS when idle before, and 5 s after.

    cargo build --release -p serval
    python3 bench/hardening.py
"""
import gzip
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.path.join(ROOT, "target", "release", "serval")
MODEL = os.path.join(ROOT, "fixtures", "public", "xgb_multi_iris.json")


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def post(url, body, headers):
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    home = tempfile.mkdtemp()
    env = dict(os.environ, SERVAL_HOME=home, SERVAL_LOG="warn")
    run = lambda *a: subprocess.run([SERVAL, *a], env=env, check=True, capture_output=True, text=True).stdout
    run("create", "--name", "hardening")
    model = run("model", "upload", "--name", "iris", "--path", MODEL).splitlines()[0].split("ID=")[-1]
    run("model", "add", "--engine", "xgboost", "--endpoint", "xgb", "--model-id", model)
    server = subprocess.Popen([SERVAL, "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "off"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    base = re.search(r"http://\S+", server.stdout.readline()).group(0)
    body = gzip.compress(b'{"instances":[' + b"[0,0,0,0]," * 10485755 + b"[0,0,0,0]]}")
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    try:
        for _ in range(100):
            if post(base + "/serve/xgb", b'{"x0":1,"x1":2,"x2":3,"x3":4}', {"Content-Type": "application/json"}) == 200:
                break
            time.sleep(0.1)
        time.sleep(1)
        idle = rss_kb(server.pid)
        results = {}
        def send(name, path):
            t = time.perf_counter()
            results[name] = (post(base + path, body, headers), time.perf_counter() - t)
        threads = [threading.Thread(target=send, args=("serve", "/serve/xgb")),
                   threading.Thread(target=send, args=("v2", "/v2/models/xgb/infer"))]
        [t.start() for t in threads]
        health = []
        while any(t.is_alive() for t in threads):
            t = time.perf_counter()
            urllib.request.urlopen(base + "/health/live", timeout=30).read()
            health.append(time.perf_counter() - t)
            time.sleep(0.005)
        [t.join() for t in threads]
        peak = rss_kb(server.pid, "VmHWM")
        time.sleep(5)
        after = rss_kb(server.pid)
        print(f"body: {len(body)/1024:.0f} KB gzip -> {10485756*4} values")
        for name, (status, took) in results.items():
            print(f"{name}: HTTP {status} after {took*1000:.0f} ms")
        print(f"/health/live during the two: {len(health)} checks, median {statistics.median(health)*1000:.1f} ms, "
              f"max {max(health)*1000:.1f} ms")
        print(f"RSS: idle {idle/1024:.0f} MB, peak {peak/1024:.0f} MB, 5 s after {after/1024:.0f} MB")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
