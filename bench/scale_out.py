"""Scale-out measurements (PostgreSQL store, object storage), one sitting:

  1. propagation: a CLI change (`model add` of a new endpoint) until both of two `serval serve`
     processes (separate homes, one PostgreSQL store) answer it — with LISTEN/NOTIFY (default)
     and with polling only (`serve --poll-only`, the default 250 ms poll);
  2. a 200 MB model fetched from S3 (moto) by a server: load time and the server's peak RSS.

    cargo build --release -p serval
    scripts/setup-postgres.sh && scripts/setup-python.sh
    .venv/bin/python bench/scale_out.py [--changes 20] [--model-mb 200]

PostgreSQL runs as a throwaway cluster (as the `postgres` user when run as root), moto from the
test venv. Times are measured from the moment the CLI process exits (its transaction committed)
to the first 200 from each server, polling each server every 2 ms.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVAL = os.path.join(ROOT, "target", "release", "serval")
MODEL = os.path.join(ROOT, "fixtures", "public", "lgbm_multi_iris.txt")
IRIS = b'{"x0": 1, "x1": 2, "x2": 3, "x3": 4}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin():
    out = subprocess.run([os.path.join(ROOT, "scripts", "setup-postgres.sh")],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Postgres:
    def __init__(self, tmp):
        # Its own folder under /tmp: the server's user must be able to reach it.
        self.dir = tempfile.mkdtemp(prefix="serval-bench-pg-")
        self.port = free_port()
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_user:
            shutil.chown(self.dir, "postgres")
        bin_dir = pg_bin()
        data = os.path.join(self.dir, "data")
        subprocess.run(as_user + [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "serval",
                                  "-A", "trust", "--no-locale", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        self.proc = subprocess.Popen(
            as_user + [os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(self.port),
                       "-k", self.dir, "-c", "listen_addresses=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"postgres://serval@127.0.0.1:{self.port}/postgres"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                time.sleep(0.5)
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("PostgreSQL did not start")

    def stop(self):
        subprocess.run(["kill", "-INT", str(self.proc.pid)])
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Moto:
    def __init__(self):
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        self.proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.endpoint = f"http://127.0.0.1:{m.group(1)}"
                break
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        req = urllib.request.Request(f"{self.endpoint}/models", method="PUT")
        urllib.request.urlopen(req).read()

    def env(self):
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing-secret",
                "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"}


def cli(home, env, *args):
    e = dict(os.environ, SERVAL_HOME=home, **env)
    return subprocess.run([SERVAL, *args], env=e, check=True, capture_output=True, text=True).stdout


class Server:
    def __init__(self, home, env, *extra):
        e = dict(os.environ, SERVAL_HOME=home, SERVAL_LOG="warn", **env)
        self.proc = subprocess.Popen(
            [SERVAL, "serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "off", *extra],
            env=e, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.base = re.search(r"http://\S+", line).group(0)

    def status(self, path, body=IRIS):
        try:
            req = urllib.request.Request(self.base + path, data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def propagation(tmp, pg_url, changes, poll_only):
    env = {"SERVAL_STORE": pg_url}
    cli_home = tempfile.mkdtemp(dir=tmp)
    # A fresh database per mode: create one through psql-free SQL via the CLI is not possible,
    # so each mode uses its own service instead.
    out = cli(cli_home, env, "create", "--name", f"prop-{'poll' if poll_only else 'notify'}")
    service = out.strip().split("id=")[-1]
    env["SERVAL_SERVICE_ID"] = service
    model = cli(cli_home, env, "model", "upload", "--name", "iris", "--path", MODEL)
    model = model.splitlines()[0].split("ID=")[-1]
    extra = ["--poll-only"] if poll_only else []
    servers = [Server(tempfile.mkdtemp(dir=tmp), env, *extra) for _ in range(2)]
    try:
        times = []
        for i in range(changes):
            endpoint = f"e{i}"
            start = time.perf_counter()
            cli(cli_home, env, "model", "add", "--engine", "lightgbm", "--endpoint", endpoint,
                "--model-id", model)
            committed = time.perf_counter()
            served = []
            for s in servers:
                while s.status(f"/serve/{endpoint}") != 200:
                    if time.perf_counter() - committed > 30:
                        raise SystemExit(f"{endpoint} not served after 30 s")
                    time.sleep(0.002)
                served.append(time.perf_counter() - committed)
            times.append((max(served), committed - start))
            time.sleep(0.3)
        return times
    finally:
        for s in servers:
            s.stop()


def big_model(tmp, pg_url, moto, megabytes):
    env = dict(moto.env(), SERVAL_STORE=pg_url, SERVAL_ARTIFACTS="s3://models/bench")
    cli_home = tempfile.mkdtemp(dir=tmp)
    service = cli(cli_home, env, "create", "--name", "big").strip().split("id=")[-1]
    env["SERVAL_SERVICE_ID"] = service
    blob = os.path.join(tmp, "big.bin")
    with open(blob, "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(megabytes):
            f.write(chunk)
    t = time.perf_counter()
    model = cli(cli_home, env, "model", "upload", "--name", "big", "--path", blob)
    upload_s = time.perf_counter() - t
    model = model.splitlines()[0].split("ID=")[-1]
    code = os.path.join(tmp, "noop.py")
    with open(code, "w") as f:
        f.write("class Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n"
                "        return {'ok': 1}\n")
    server = Server(tempfile.mkdtemp(dir=tmp), env, "--python", sys.executable)
    try:
        idle = server.rss_kb()
        peak = [idle]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], server.rss_kb())
                time.sleep(0.01)
        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        cli(cli_home, env, "model", "add", "--engine", "custom", "--endpoint", "big",
            "--model-id", model, "--preprocess", code)
        while server.status("/serve/big", b"{}") != 200:
            if time.perf_counter() - t > 300:
                raise SystemExit("the big model was not served after 300 s")
            time.sleep(0.01)
        load_s = time.perf_counter() - t
        done.set()
        sampler.join()
        return upload_s, load_s, idle, peak[0]
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--model-mb", type=int, default=200)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="serval-bench-")
    pg = Postgres(tmp)
    moto = Moto()
    try:
        for poll_only in (False, True):
            times = propagation(tmp, pg.url, args.changes, poll_only)
            served = [t for t, _ in times]
            cli_s = [c for _, c in times]
            mode = "polling only (250 ms)" if poll_only else "LISTEN/NOTIFY"
            print(flush=True, end="")
            print(f"propagation, {mode}: CLI exit -> served by both servers over {len(times)} changes: "
                  f"median {statistics.median(served)*1000:.0f} ms, max {max(served)*1000:.0f} ms "
                  f"(the CLI command itself: median {statistics.median(cli_s)*1000:.0f} ms)")
        upload_s, load_s, idle, peak = big_model(tmp, pg.url, moto, args.model_mb)
        print(f"{args.model_mb} MB model: upload to S3 {upload_s:.1f} s; CLI change -> served after "
              f"download + sha256 check {load_s:.1f} s; server RSS idle {idle/1024:.0f} MB, "
              f"peak {peak/1024:.0f} MB (+{(peak-idle)/1024:.0f} MB)")
    finally:
        moto.proc.kill()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
