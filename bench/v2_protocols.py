"""serval's three protocols on the same model, one sitting: clearml `/serve`, V2 REST (JSON, and the
binary tensor extension) and V2 gRPC.

    cargo build --release -p serval
    .venv/bin/python bench/v2_protocols.py [--rounds 3] [--seconds 10] [--pin]

Load generator: h2load (Debian's nghttp2-client) for every transport — HTTP/1.1 (`--h1`) for the
REST routes, HTTP/2 with gRPC framing for ModelInfer — so the client is the same C program for all
of them; wrk (single-row HTTP/1.1 only) as a cross-check. The gRPC body is a real ModelInferRequest
(tritonclient's generated protobuf classes, in the test venv). h2load does not read gRPC trailers,
so after each run the script checks serval's own counters: every request answered `ok`.

Two workloads:
  1. single row (4 features) on an XGBoost model (fixtures/public/xgb_multi_iris.json), 16 streams;
  2. a 1 MB FP32 tensor ([1, 262144]) on an ONNX model that sums it (built here with `onnx`'s
     helper), 1 and 4 streams: V2 JSON vs V2 binary vs gRPC (raw_input_contents).
Rounds alternate the transports so machine noise hits all alike; the median round is reported.
Then the 1 MB tensor once more as a user sends it: NVIDIA's tritonclient from Python, one request
at a time (HTTP JSON, HTTP binary, gRPC), mean milliseconds per request including the client's
own encoding. `--clients-only` runs just that part.
"""
import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import onnx
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.environ.get("SERVAL_BIN", os.path.join(ROOT, "target", "release", "serval"))
XGB = os.path.join(ROOT, "fixtures", "public", "xgb_multi_iris.json")
ROW = [6.0, 3.4, 4.5, 1.6]
BIG = 262144  # FP32 elements: 1 MiB

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--seconds", type=int, default=10)
parser.add_argument("--pin", action="store_true", help="server on CPU 0, load generator on CPU 1")
parser.add_argument("--clients-only", action="store_true", help="only the tritonclient measurements")
parser.add_argument("--single-row", action="store_true", help="only the single-row runs (no 1 MB tensors, no tritonclient)")
parser.add_argument("--grpc-echo", metavar="BIN",
                    help="also load this HTTP/2 ceiling (the grpc_echo example of serval-server) with the gRPC body")
args = parser.parse_args()

work = tempfile.mkdtemp(prefix="serval-v2-")
# ONNX Runtime comes from this interpreter's onnxruntime package.
env = dict(os.environ, SERVAL_HOME=os.path.join(work, "home"), SERVAL_LOG="warn", SERVAL_PYTHON=sys.executable)


def cli(*argv):
    subprocess.run([SERVAL, *argv], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sum_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    graph = helper.make_graph([node], "sum", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def write(name, data):
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def grpc_frame(request):
    payload = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(payload)) + payload


# The service: xgb_iris and sum_1m.
sum_path = os.path.join(work, "sum.onnx")
sum_model(sum_path)
cli("create", "--name", "protocols")
cli("model", "upload", "--name", "xgb_iris", "--path", XGB)
cli("model", "add", "--engine", "xgboost", "--endpoint", "xgb_iris", "--name", "xgb_iris")
cli("model", "upload", "--name", "sum_1m", "--path", sum_path)
cli("model", "add", "--engine", "onnx", "--endpoint", "sum_1m", "--name", "sum_1m")

# Bodies.
bodies = {}
bodies["serve"] = write("serve.json", json.dumps({f"x{i}": v for i, v in enumerate(ROW)}).encode())
bodies["v2_json"] = write("v2.json", json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}).encode())
request = service_pb2.ModelInferRequest(model_name="xgb_iris")
request.inputs.add(name="input", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(ROW)
bodies["grpc"] = write("grpc.bin", grpc_frame(request))
big = np.random.default_rng(7).random(BIG, dtype=np.float32)
bodies["big_json"] = write("big.json", json.dumps(
    {"inputs": [{"name": "x", "shape": [1, BIG], "datatype": "FP32", "data": big.tolist()}]}).encode())
header = json.dumps({"inputs": [{"name": "x", "shape": [1, BIG], "datatype": "FP32",
                                 "parameters": {"binary_data_size": big.nbytes}}],
                     "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
bodies["big_binary"] = write("big.bin", header + big.tobytes())
request = service_pb2.ModelInferRequest(model_name="sum_1m")
request.inputs.add(name="x", datatype="FP32", shape=[1, BIG])
request.raw_input_contents.append(big.tobytes())
bodies["big_grpc"] = write("big_grpc.bin", grpc_frame(request))

pin_server = ["taskset", "-c", "0"] if args.pin else []
pin_client = ["taskset", "-c", "1"] if args.pin else []
server = subprocess.Popen([*pin_server, SERVAL, "serve", "--host", "127.0.0.1", "--port", "0",
                           "--grpc-port", "0", "--body-limit", str(64 << 20)],
                          env=env, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serval.log"), "w"),
                          text=True)
line = server.stdout.readline()
http = re.search(r"http://([0-9.:]+)", line).group(1)
grpc = re.search(r"grpc://([0-9.:]+)", line).group(1)
echo = None
if args.grpc_echo:
    echo = subprocess.Popen([*pin_server, args.grpc_echo], stdout=subprocess.PIPE, text=True)
    echo_addr = re.search(r"grpc://([0-9.:]+)", echo.stdout.readline()).group(1)


def metrics():
    with urllib.request.urlopen(f"http://{http}/metrics") as r:
        text = r.read().decode()
    counts = {}
    for m in re.finditer(r'^serval_requests_total\{endpoint="([^"]*)",version="",protocol="([^"]+)",outcome="([^"]+)"\} (\d+)',
                         text, re.M):
        counts[m.groups()[:3]] = int(m.group(4))
    return counts


deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen(f"http://{http}/health/ready") as r:
            ready = json.loads(r.read())
        if ready["endpoints"] == 2:
            assert not ready["failed"], f"endpoints failed to load: {ready} (see serval's log)"
            break
    except OSError:
        pass
    assert time.time() < deadline, "serval did not become ready"
    time.sleep(0.1)

# (name, endpoint, protocol label, url, body, headers, h1)
CASES = {
    "serve": ("xgb_iris", "clearml", f"http://{http}/serve/xgb_iris", bodies["serve"],
              ["content-type: application/json"], True),
    "v2_json": ("xgb_iris", "v2_rest", f"http://{http}/v2/models/xgb_iris/infer", bodies["v2_json"],
                ["content-type: application/json"], True),
    "grpc": ("xgb_iris", "v2_grpc", f"http://{grpc}/inference.GRPCInferenceService/ModelInfer",
             bodies["grpc"], ["content-type: application/grpc", "te: trailers"], False),
    "grpc_echo": (None, None, f"http://{echo_addr}/inference.GRPCInferenceService/ModelInfer" if echo else "",
                  bodies["grpc"], ["content-type: application/grpc", "te: trailers"], False),
    "big_json": ("sum_1m", "v2_rest", f"http://{http}/v2/models/sum_1m/infer", bodies["big_json"],
                 ["content-type: application/json"], True),
    "big_binary": ("sum_1m", "v2_rest", f"http://{http}/v2/models/sum_1m/infer", bodies["big_binary"],
                   ["content-type: application/octet-stream",
                    f"inference-header-content-length: {len(header)}"], True),
    "big_grpc": ("sum_1m", "v2_grpc", f"http://{grpc}/inference.GRPCInferenceService/ModelInfer",
                 bodies["big_grpc"], ["content-type: application/grpc", "te: trailers"], False),
}


def h2load(case, streams):
    endpoint, protocol, url, body, headers, h1 = CASES[case]
    before = metrics()
    cmd = [*pin_client, "h2load", "-D", str(args.seconds), "--warm-up-time", "2", "-c", str(streams),
           "-m", "1", "-d", body, url]
    for h in headers:
        cmd += ["-H", h]
    if h1:
        cmd.append("--h1")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)
    if endpoint is None:
        return rps, mean  # the ceiling keeps no counters
    after = metrics()
    ok = after.get((endpoint, protocol, "ok"), 0) - before.get((endpoint, protocol, "ok"), 0)
    errors = {k: after[k] - before.get(k, 0) for k in after
              if k[0] == endpoint and k[2] != "ok" and after[k] != before.get(k, 0)}
    # h2load stops its clients mid-request when the time is up: those count as cancelled.
    cancelled = errors.pop((endpoint, protocol, "cancelled"), 0)
    assert not errors and cancelled <= streams, f"{case}: errors {errors}, {cancelled} cancelled\n{out}"
    # Warm-up requests are answered but not counted by h2load: ok ≥ done.
    assert ok >= done > 0, f"{case}: {ok} ok for {done} requests\n{out}"
    return rps, mean


def wrk(case, streams):
    _, _, url, body, _, _ = CASES[case]
    out = subprocess.run([*pin_client, "wrk", "-t1", f"-c{streams}", f"-d{args.seconds}s", "-s",
                          os.path.join(ROOT, "bench", "lib", "post.lua"), url],
                         env=dict(os.environ, BODY_FILE=body), capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT requests=\d+ rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) max_ms=[\d.]+ errors=(\d+)", out)
    assert m and m.group(4) == "0", out
    return float(m.group(1)), f"p50 {m.group(2)} ms, p99 {m.group(3)} ms"


def tritonclient_runs():
    """Mean ms per 1 MB request from Python's tritonclient, one at a time."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    tensor = big.reshape(1, BIG)
    results = {}
    for name, module, binary in [("http json", httpclient, False), ("http binary", httpclient, True),
                                 ("grpc", grpcclient, None)]:
        client = module.InferenceServerClient(http if module is httpclient else grpc)
        x = module.InferInput("x", [1, BIG], "FP32")
        if binary is None:
            x.set_data_from_numpy(tensor)
            outputs = [module.InferRequestedOutput("y")]
        else:
            x.set_data_from_numpy(tensor, binary_data=binary)
            outputs = [module.InferRequestedOutput("y", binary_data=binary)]
        n = 10 if binary is False else 100
        for _ in range(3):
            client.infer("sum_1m", [x], outputs=outputs)
        start = time.perf_counter()
        for _ in range(n):
            y = client.infer("sum_1m", [x], outputs=outputs).as_numpy("y")
        results[name] = (time.perf_counter() - start) * 1000 / n
        assert abs(float(y[0][0]) - float(big.sum())) < 1e-2 * abs(float(big.sum())), y
    return results


runs = {}
plan = [] if args.clients_only else [("h2load", c, 16) for c in ("serve", "v2_json", "grpc")] + \
       ([("h2load", "grpc_echo", 16)] if echo else []) + \
       [("wrk", c, 16) for c in ("serve", "v2_json")] + \
       ([] if args.single_row else
        [("h2load", c, s) for s in (1, 4) for c in ("big_json", "big_binary", "big_grpc")])
try:
    for r in range(0 if args.clients_only else args.rounds):
        for tool, case, streams in plan:
            rps, latency = (h2load if tool == "h2load" else wrk)(case, streams)
            runs.setdefault((tool, case, streams), []).append((rps, latency))
            print(f"round {r + 1}: {tool:6} {case:10} c={streams:<2} {rps:10.1f} req/s  ({latency})", flush=True)
    clients = {} if args.single_row else tritonclient_runs()
finally:
    server.terminate()
    server.wait()
    if echo:
        echo.terminate()
        echo.wait()

if clients:
    print("\n| tritonclient, 1 MB FP32, one request at a time | ms per request |")
    print("| --- | --- |")
    for name, ms in clients.items():
        print(f"| {name} | {ms:.2f} |")
print("\n| load | transport | streams | req/s (median of %d) | latency of the median run |" % args.rounds)
print("| --- | --- | --- | --- | --- |")
for (tool, case, streams), values in runs.items():
    values.sort()
    rps, latency = values[len(values) // 2]
    print(f"| {tool} | {case} | {streams} | {rps:,.0f} | {latency} |")
