"""The `triton` engine, native vs forwarded, one sitting: clearml's pytorch example (PNG bytes →
preprocess → an MNIST-shaped ONNX model → {"digit": N}) and the same model without preprocess code
(a JSON body of 784 floats), served

  - natively: ONNX Runtime inside `serval serve`;
  - forwarded: `config --triton-grpc-server` → MLServer 1.7.1 (a custom runtime wrapping
    onnxruntime, in-process: parallel_workers 0) over V2 gRPC.

    cargo build --release -p serval && scripts/setup-python.sh
    .venv/bin/python bench/triton_forward.py [--seconds 10] [--connections 16]

Load: wrk, 1 thread, --connections, --seconds per run, after a 2 s warm-up; serval with
`--python-workers 2`. Prints req/s and latency percentiles per case.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.path.join(ROOT, "target", "release", "serval")
PYTHON = sys.executable
IO = ["--input-size", "1", "28", "28", "--input-name", "INPUT__0", "--input-type", "float32",
      "--output-size", "-1", "10", "--output-name", "OUTPUT__0", "--output-type", "float32"]
RUNTIME = '''
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse
from mlserver.utils import get_model_uri

class OnnxModel(MLModel):
    async def load(self):
        self.session = onnxruntime.InferenceSession(await get_model_uri(self._settings), providers=["CPUExecutionProvider"])
        return True

    async def predict(self, request):
        feed = {i.name: NumpyCodec.decode_input(i) for i in request.inputs}
        names = [o.name for o in request.outputs or []] or [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feed)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(names, results)])
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url, body=None, headers=None, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            req = urllib.request.Request(url, data=body, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return r.read()
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("timed out waiting for %s" % url)


def serval(home, *args):
    env = dict(os.environ, SERVAL_HOME=home, SERVAL_PYTHON=PYTHON)
    out = subprocess.run([SERVAL, *args], env=env, check=True, capture_output=True, text=True)
    return out.stdout


def start_serval(home, log):
    port = free_port()
    env = dict(os.environ, SERVAL_HOME=home, SERVAL_PYTHON=PYTHON)
    proc = subprocess.Popen([SERVAL, "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--grpc-port", "0", "--python-workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return proc, "http://127.0.0.1:%d" % port


def wrk(url, body_file, content_type, seconds, connections, tmp):
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nlocal f = io.open("%s", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
                'wrk.headers["Content-Type"] = "%s"\n' % (body_file, content_type))
    common = ["wrk", "-t1", "-c%d" % connections, "--latency", "-s", script, url]
    subprocess.run(common[:3] + ["-d2s"] + common[3:], check=True, capture_output=True)
    out = subprocess.run(common[:3] + ["-d%ds" % seconds] + common[3:], check=True,
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat.get("50"), lat.get("99"), int(errors.group(1)) if errors else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="serval-bench-triton-")
    files = os.path.join(tmp, "files")
    subprocess.run([PYTHON, os.path.join(ROOT, "examples", "pytorch", "make_model.py"), "--out", files],
                   check=True, capture_output=True)
    onnx = os.path.join(files, "model.onnx")
    png = os.path.join(files, "5.png")
    raw = os.path.join(tmp, "raw.json")
    with open(raw, "w") as f:
        image = [[0.0] * 28 for _ in range(28)]
        for r in (14, 15):
            image[r][4:24] = [255.0] * 20
        json.dump({"INPUT__0": [image]}, f)
    preprocess = os.path.join(ROOT, "examples", "pytorch", "preprocess.py")

    # MLServer with the model as test_model_pytorch and mnist_raw, version 1.
    repo = os.path.join(tmp, "mlserver")
    for name in ("test_model_pytorch", "mnist_raw"):
        folder = os.path.join(repo, name)
        os.makedirs(folder)
        os.link(onnx, os.path.join(folder, "model.onnx"))
        with open(os.path.join(folder, "runtime.py"), "w") as f:
            f.write(RUNTIME)
        with open(os.path.join(folder, "model-settings.json"), "w") as f:
            json.dump({"name": name, "implementation": "runtime.OnnxModel",
                       "parameters": {"uri": "./model.onnx", "version": "1"}}, f)
    http, grpc, metrics = free_port(), free_port(), free_port()
    with open(os.path.join(repo, "settings.json"), "w") as f:
        json.dump({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics,
                   "parallel_workers": 0}, f)
    mlserver = subprocess.Popen([os.path.join(os.path.dirname(PYTHON), "mlserver"), "start", repo],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "mlserver.log"), "w"))
    try:
        for name in ("test_model_pytorch", "mnist_raw"):
            wait("http://127.0.0.1:%d/v2/models/%s/versions/1/ready" % (http, name))
        results = []
        for mode in ("native", "forwarded"):
            home = os.path.join(tmp, mode)
            serval(home, "create", "--name", mode)
            model = json.loads(serval(home, "--json", "model", "upload", "--name", "mnist", "--path", onnx))["id"]
            if mode == "forwarded":
                serval(home, "config", "--triton-grpc-server", "127.0.0.1:%d" % grpc)
            serval(home, "model", "add", "--engine", "triton", "--endpoint", "test_model_pytorch",
                   "--model-id", model, "--preprocess", preprocess, *IO)
            serval(home, "model", "add", "--engine", "triton", "--endpoint", "mnist_raw", "--model-id", model, *IO)
            proc, base = start_serval(home, os.path.join(tmp, mode + ".log"))
            try:
                with open(png, "rb") as f:
                    reply = wait(base + "/serve/test_model_pytorch", f.read(), {"Content-Type": "image/png"})
                assert json.loads(reply) == {"digit": 5}, reply
                with open(raw, "rb") as f:
                    wait(base + "/serve/mnist_raw", f.read(), {"Content-Type": "application/json"})
                for case, url, body, ctype in (
                        ("pytorch example (PNG → preprocess → model)", "/serve/test_model_pytorch", png, "image/png"),
                        ("model only (JSON 1x28x28)", "/serve/mnist_raw", raw, "application/json")):
                    rps, p50, p99, errors = wrk(base + url, body, ctype, args.seconds, args.connections, tmp)
                    results.append((case, mode, rps, p50, p99, errors))
                    print("%-44s %-9s %9.0f req/s  p50 %-8s p99 %-8s non-2xx %d" % (case, mode, rps, p50, p99, errors),
                          flush=True)
            finally:
                proc.terminate()
                proc.wait()
    finally:
        mlserver.terminate()
        mlserver.wait()


if __name__ == "__main__":
    main()
