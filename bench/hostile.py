"""Hostile traffic, second pass (issue 25): each attack class against a release build, one fresh
server per class, with the figures docs/reliability.md quotes:

  - the server's peak RSS during the attack over its idle RSS (sampled every 5 ms);
  - /health/live latency during the attack (a probe every 10 ms on its own connection): p99, max;
  - RSS 10 s after the attack, with no traffic at all;
  - what the attacker got, and whether a normal client was answered meanwhile.

    cargo build --release -p serval
    SERVAL_PYTHON=.venv/bin/python python3 bench/hostile.py [CLASS ...]

Needs the test venv's Python (grpcio, tritonclient) for the gRPC and Python-endpoint classes.
"""
import gzip
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.environ.get("SERVAL_BIN", os.path.join(ROOT, "target", "release", "serval"))
MODEL = os.path.join(ROOT, "fixtures", "public", "xgb_multi_iris.json")
IRIS = b'{"x0":1,"x1":2,"x2":3,"x3":4}'
JSON = {"Content-Type": "application/json"}
ECHO = "class Preprocess:\n    def process(self, data, state, fn=None):\n        return {'ok': True}\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def post(url, body, headers=JSON, timeout=120):
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


class Server:
    """A fresh service with an XGBoost endpoint `xgb` and a Python endpoint `py`."""

    def __init__(self, *flags):
        self.home = tempfile.mkdtemp()
        env = dict(os.environ, SERVAL_HOME=self.home, SERVAL_LOG="warn")
        run = lambda *a: subprocess.run([SERVAL, *a], env=env, check=True, capture_output=True, text=True).stdout
        run("create", "--name", "hostile")
        model = run("model", "upload", "--name", "iris", "--path", MODEL).splitlines()[0].split("ID=")[-1]
        run("model", "add", "--engine", "xgboost", "--endpoint", "xgb", "--model-id", model)
        code = os.path.join(self.home, "echo.py")
        with open(code, "w") as f:
            f.write(ECHO)
        run("model", "add", "--engine", "custom", "--endpoint", "py", "--preprocess", code)
        self.proc = subprocess.Popen(
            [SERVAL, "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0", *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.base = re.search(r"http://\S+", line).group(0)
        self.grpc = re.search(r"grpc://(\S+)", line).group(1)
        self.addr = self.base[len("http://"):]
        for _ in range(600):
            if post(self.base + "/serve/xgb", IRIS) == 200 and post(self.base + "/serve/py", b"{}") == 200:
                break
            time.sleep(0.1)
        time.sleep(1)
        self.idle = rss_kb(self.proc.pid)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def measure(server, attack):
    """Runs `attack()` while sampling RSS and probing /health/live; returns the figures."""
    pid, stop = server.proc.pid, threading.Event()
    peak, probes = [server.idle], []

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.005)

    def probe():
        while not stop.is_set():
            start = time.perf_counter()
            ok = post(server.base + "/health/live", None, {}, timeout=30) == 200
            probes.append((time.perf_counter() - start) * 1000 if ok else float("inf"))
            time.sleep(0.01)

    threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    outcome = attack()
    took = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join()
    normal = post(server.base + "/serve/xgb", IRIS)
    time.sleep(10)
    probes.sort()
    return {
        "attacker got": outcome,
        "took s": round(took, 2),
        "normal client": normal,
        "idle MB": server.idle // 1024,
        "peak growth MB": (peak[0] - server.idle) // 1024,
        "RSS 10 s later MB": rss_kb(pid) // 1024,
        "health p99 ms": round(probes[int(len(probes) * 0.99) - 1], 1) if probes else None,
        "health max ms": round(probes[-1], 1) if probes else None,
        "health probes": len(probes),
    }


def deep_shapes(server):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1] * 10000, "datatype": "INT64", "data": [7]}]}).encode()
    return sorted({post(server.base + "/v2/models/py/infer", body) for _ in range(50)})


def silent_sockets(server):
    sockets = [socket.create_connection((server.addr.split(":")[0], int(server.addr.split(":")[1])))
               for _ in range(60)]
    served = post(server.base + "/health/live", None, {}, timeout=30)
    start, closed = time.perf_counter(), 0
    for s in sockets:
        s.settimeout(120)
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
        closed += 1
    return {"new client": served, "all 60 closed after s": round(time.perf_counter() - start, 1)}


def unfinished_streams(server):
    """1,000 gRPC ModelInfer streams that open and never send their message (grpcio frames every
    message it sends whole, so a prefix alone cannot be sent from here; what arrives of a message
    is bounded by what arrives, tested in crates/serval/tests/it/hardening.rs)."""
    script = r"""
import grpc, sys, threading
channel = grpc.insecure_channel(sys.argv[1])
call = channel.stream_unary("/inference.GRPCInferenceService/ModelInfer",
                            request_serializer=lambda m: m, response_deserializer=lambda m: m)
codes = {}
def one():
    def parts():
        threading.Event().wait(3600)
        yield b""
    try:
        call(parts(), timeout=120)
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    codes[code] = codes.get(code, 0) + 1
threads = [threading.Thread(target=one, daemon=True) for _ in range(1000)]
for t in threads: t.start()
for t in threads: t.join()
print(codes)
"""
    out = subprocess.run([os.environ.get("SERVAL_PYTHON", "python3"), "-c", script, server.grpc],
                         capture_output=True, text=True)
    return (out.stdout or out.stderr).strip()[-200:]


def rows_under_the_cap(server, at_once=1):
    """3.99 M rows × 4 features (15.96 M values, just under the 16 M cap) of gzip JSON to the
    native model."""
    body = gzip.compress(b'{"instances":[' + b"[0,0,0,0]," * (3_990_000 - 1) + b"[0,0,0,0]]}")
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(server.base + "/serve/xgb", body, headers)))
               for _ in range(at_once)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results)


def python_tiny_values(server):
    """15.9 M tiny values (a flat list of zeros, just under the 16 M cap) of gzip JSON to the
    Python endpoint through /serve."""
    body = gzip.compress(b"[" + b"0," * (15_900_000 - 1) + b"0]")
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return post(server.base + "/serve/py", body, headers)


def empty_strings(server):
    """15.9 M empty BYTES strings in a V2 JSON request to the Python endpoint."""
    n = 15_900_000
    body = gzip.compress(b'{"inputs":[{"name":"x","shape":[%d],"datatype":"BYTES","data":[' % n
                         + b'"",' * (n - 1) + b'""]}]}')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return post(server.base + "/v2/models/py/infer", body, headers)


def binary_empty_bytes(server):
    """26 M zero-length elements of a binary-extension BYTES tensor (104 MB of length prefixes,
    gzip) to the Python endpoint."""
    n = 26_000_000
    header = json.dumps({"inputs": [{"name": "x", "shape": [n], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 * n}}]}).encode()
    body = gzip.compress(header + b"\0" * (4 * n))
    headers = {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip",
               "Inference-Header-Content-Length": str(len(header))}
    return post(server.base + "/v2/models/py/infer", body, headers)


def gzip_bomb(server):
    body = gzip.compress(b" " * (200 << 20))
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    return post(server.base + "/serve/xgb", body, headers)


CLASSES = {
    "deep-shapes": ([], deep_shapes),
    "silent-sockets": (["--max-connections", "60", "--header-timeout", "5"], silent_sockets),
    "unfinished-grpc-streams": (["--request-timeout", "5"], unfinished_streams),
    "rows-under-the-cap": ([], rows_under_the_cap),
    "rows-under-the-cap-x2": ([], lambda s: rows_under_the_cap(s, 2)),
    "gzip-bomb": ([], gzip_bomb),
    "python-tiny-values": ([], python_tiny_values),
    "empty-strings": ([], empty_strings),
    "binary-empty-bytes": ([], binary_empty_bytes),
}


def main():
    chosen = sys.argv[1:] or list(CLASSES)
    for name in chosen:
        flags, attack = CLASSES[name]
        server = Server(*flags)
        try:
            print(name, json.dumps(measure(server, lambda: attack(server))), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
