"""Concurrent clients against a batched endpoint of a real `serval serve` (driven by
tests/it/batching.rs).

own-rows HTTP GRPC BATCHED PLAIN N FEATURES
    N requests per protocol (clearml /serve, V2 REST, V2 gRPC through tritonclient), each with its
    own random rows (1 to 4), sent by 16 threads at once to BATCHED; every answer must equal the
    same request's answer from PLAIN (the same model, not batched), asked one at a time after.
queue-full HTTP ENDPOINT FEATURES ROWS CLIENTS
    CLIENTS requests of ROWS rows at once: some must be refused with 429, a Retry-After header and
    a JSON message naming --max-queue-size; the others answered with ROWS rows.
Prints one summary line and exits 0 when every check holds.
"""

import json
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as grpcclient


def post(url, body):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, dict(reply.headers), json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def close(a, b, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6), f"{what}: {a} != {b}"


def own_rows(http, grpc, batched, plain, n, features):
    rng = np.random.default_rng(11)
    inputs = [
        rng.uniform(0, 16, size=(int(rng.integers(1, 5)), features)).astype(np.float32)
        for _ in range(n)
    ]
    local = threading.local()

    def grpc_client():
        if not hasattr(local, "client"):
            local.client = grpcclient.InferenceServerClient(grpc)
        return local.client

    def serve(endpoint, x):
        status, _, body = post(f"http://{http}/serve/{endpoint}", {"instances": x.tolist()})
        assert status == 200, f"/serve/{endpoint}: {status} {body}"
        return body

    def v2_rest(endpoint, x):
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.flatten().tolist()}]}
        status, _, reply = post(f"http://{http}/v2/models/{endpoint}/infer", body)
        assert status == 200, f"V2 REST {endpoint}: {status} {reply}"
        return {o["name"]: o["data"] for o in reply["outputs"]}

    def v2_grpc(endpoint, x):
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = grpc_client().infer(endpoint, [tensor])
        names = [o.name for o in result.get_response().outputs]
        return {name: result.as_numpy(name).tolist() for name in names}

    checked = 0
    for name, call in [("serve", serve), ("v2_rest", v2_rest), ("v2_grpc", v2_grpc)]:
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda x: call(batched, x), inputs))
        for i, x in enumerate(inputs):
            expected = call(plain, x)
            assert sorted(got[i]) == sorted(expected), f"{name} #{i}: {got[i]} vs {expected}"
            for key in expected:
                if isinstance(expected[key], list) and expected[key] and isinstance(
                    expected[key][0], dict
                ):
                    # ZipMap rows: {label: probability}
                    assert len(got[i][key]) == len(expected[key]), f"{name} #{i} {key}"
                    for g, e in zip(got[i][key], expected[key]):
                        assert sorted(g) == sorted(e), f"{name} #{i} {key}"
                        close([g[k] for k in sorted(g)], [e[k] for k in sorted(e)], f"{name} #{i}")
                else:
                    close(got[i][key], expected[key], f"{name} #{i} {key}")
            checked += 1
    print(f"own rows: {checked} concurrent requests over /serve, V2 REST and V2 gRPC answered with their own rows")


def queue_full(http, endpoint, features, rows, clients):
    x = np.full((rows, features), 0.5, dtype=np.float32).tolist()
    barrier = threading.Barrier(clients)

    def one(_):
        barrier.wait()
        return post(f"http://{http}/serve/{endpoint}", {"instances": x})

    with ThreadPoolExecutor(clients) as pool:
        replies = list(pool.map(one, range(clients)))
    refused = [r for r in replies if r[0] == 429]
    answered = [r for r in replies if r[0] == 200]
    assert len(refused) + len(answered) == clients, [r[0] for r in replies]
    assert refused, "no request was refused"
    assert answered, "every request was refused"
    for status, headers, body in refused:
        retry = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        assert retry is not None and int(retry) >= 1, headers
        assert "--max-queue-size" in body["detail"], body
    for _, _, body in answered:
        assert len(body["y"]) == rows, body
    print(f"queue full: {len(refused)} of {clients} refused with 429 and Retry-After, {len(answered)} answered")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "own-rows":
        own_rows(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]))
    elif command == "queue-full":
        queue_full(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    else:
        sys.exit(f"unknown command {command}")
