"""Drives a running `serval serve` with NVIDIA's tritonclient over HTTP (JSON tensors and binary
tensors) and gRPC, as a Triton user would, and compares every answer with what clearml's
`/serve` route gives for the same rows.

Usage: v2_clients.py HTTP_HOST:PORT GRPC_HOST:PORT BODY_LIMIT

The server must serve (see tests/it/v2_clients.rs): test_model_xgb (XGBoost regressor),
test_model_lgbm/1 (LightGBM classifier), iris_onnx (ONNX classifier with ZipMap), diabetes_onnx
(ONNX regressor) and py_features (sklearn in Python, preprocess reads `features`).
Prints one line per check; raises (exit status 1) at the first failure.
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

HTTP, GRPC, BODY_LIMIT = sys.argv[1], sys.argv[2], int(sys.argv[3])

IRIS = np.array([[1.0, 2.0, 3.0, 4.0], [6.0, 3.4, 4.5, 1.6]])
DIABETES = np.linspace(-0.1, 0.1, 20).reshape(2, 10)
FEATURES = np.array([[1.0, 2.0], [3.0, -4.0], [-2.5, 0.5]])

# model, version, input name, datatype, rows, /serve body, {V2 output: /serve reply key}
CASES = [
    ("test_model_xgb", "", "input", "FP32", IRIS, {"instances": IRIS.tolist()}, {"predictions": "y"}),
    ("test_model_lgbm", "1", "input", "FP64", IRIS, {"instances": IRIS.tolist()},
     {"label": "y", "probabilities": "probabilities"}),
    ("iris_onnx", "", "input", "FP32", IRIS, IRIS.tolist(),
     {"output_label": "y", "output_probability": "probabilities"}),
    ("diabetes_onnx", "", "input", "FP32", DIABETES, DIABETES.tolist(), {"variable": "y"}),
    ("py_features", "", "features", "FP64", FEATURES, {"features": FEATURES.tolist()}, {"y": "y"}),
]


def check(what, condition, detail=""):
    if not condition:
        raise AssertionError(f"{what}: {detail}")
    print(f"ok  {what}")


def serve(model, version, body):
    path = f"/serve/{model}" + (f"/{version}" if version else "")
    request = urllib.request.Request(f"http://{HTTP}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def raw_post(path, body, headers=None):
    request = urllib.request.Request(f"http://{HTTP}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def same(v2, served, what):
    v2 = np.asarray(v2, dtype=np.float64).reshape(-1)
    served = np.asarray(served, dtype=np.float64).reshape(-1)
    check(what, v2.shape == served.shape and np.allclose(v2, served, rtol=1e-6, atol=1e-7),
          f"V2 {v2} vs /serve {served}")


def server_checks(client, kind):
    check(f"{kind}: server live", client.is_server_live())
    check(f"{kind}: server ready", client.is_server_ready())
    meta = client.get_server_metadata()
    if kind == "grpc":
        meta = {"name": meta.name, "extensions": list(meta.extensions)}
    check(f"{kind}: server metadata", meta["name"] == "serval"
          and "binary_tensor_data" in meta["extensions"], meta)
    for model, version, name, datatype, rows, _, outputs in CASES:
        check(f"{kind}: {model} ready", client.is_model_ready(model, version))
        meta = client.get_model_metadata(model, version)
        if kind == "grpc":
            inputs = [(i.name, i.datatype) for i in meta.inputs]
            output_names = {o.name for o in meta.outputs}
        else:
            inputs = [(i["name"], i["datatype"]) for i in meta["inputs"]]
            output_names = {o["name"] for o in meta["outputs"]}
        check(f"{kind}: {model} metadata", inputs == [(name, datatype)]
              and set(outputs) <= output_names, meta)
    index = client.get_model_repository_index()
    if kind == "grpc":
        index = [{"name": m.name, "state": m.state} for m in index.models]
    names = {m["name"] for m in index if m["state"] == "READY"}
    check(f"{kind}: repository index", {c[0] for c in CASES} <= names, index)


def infer_checks(kind, client, module, binary):
    for model, version, name, datatype, rows, body, outputs in CASES:
        served = serve(model, version, body)
        array = rows.astype(np.float32 if datatype == "FP32" else np.float64)
        tensor = module.InferInput(name, list(array.shape), datatype)
        requested = []
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
            requested = [module.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        else:
            tensor.set_data_from_numpy(array)
            requested = [module.InferRequestedOutput(o) for o in outputs]
        result = client.infer(model, [tensor], model_version=version, outputs=requested,
                              request_id="req-42")
        response = result.get_response()
        rid = response.id if kind.startswith("grpc") else response["id"]
        check(f"{kind}: {model} echoes the id", rid == "req-42", rid)
        for output, key in outputs.items():
            same(result.as_numpy(output), served[key], f"{kind}: {model} {output} equals /serve")


def expect_error(what, call, http_status=None, grpc_code=None, text=""):
    try:
        call()
    except InferenceServerException as error:
        status = str(error.status())
        message = error.message() or ""
        if http_status is not None:
            check(what, status == str(http_status) and text in message, f"{status}: {message}")
        else:
            check(what, status == f"StatusCode.{grpc_code}" and text in message,
                  f"{status}: {message}")
        return
    raise AssertionError(f"{what}: no error")


def http_errors(client):
    x = httpclient.InferInput("input", [1, 4], "FP32")
    x.set_data_from_numpy(IRIS[:1].astype(np.float32))
    expect_error("http: unknown model", lambda: client.infer("nope", [x]), 404, text="model 'nope' not found")
    expect_error("http: unknown version", lambda: client.infer("test_model_lgbm", [x], model_version="9"),
                 404, text="version '9'")
    wrong_shape = httpclient.InferInput("input", [1, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3), np.float32))
    expect_error("http: wrong shape", lambda: client.infer("test_model_xgb", [wrong_shape]), 400,
                 text="shape [1, 3]")
    wrong_type = httpclient.InferInput("input", [1, 4], "INT32")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), np.int32))
    expect_error("http: wrong datatype", lambda: client.infer("test_model_xgb", [wrong_type]), 400,
                 text="datatype INT32")
    big = httpclient.InferInput("input", [BODY_LIMIT // 16 + 1, 4], "FP32")
    big.set_data_from_numpy(np.zeros((BODY_LIMIT // 16 + 1, 4), np.float32), binary_data=True)
    expect_error("http: oversize", lambda: client.infer("test_model_xgb", [big]), 413, text="limit")
    # What tritonclient refuses to send: raw requests.
    path = "/v2/models/test_model_xgb/infer"
    count = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                    "data": [1, 2, 3, 4]}]}).encode()
    status, body = raw_post(path, count)
    check("http: element count mismatch", status == 400 and b"holds 8 elements" in body, body)
    status, body = raw_post(path, b'{"inputs": [')
    check("http: malformed JSON", status == 400 and b"error" in body, body)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    status, body = raw_post(path, header + b"\0" * 10,
                            {"Inference-Header-Content-Length": str(len(header))})
    check("http: binary size mismatch", status == 400 and b"binary_data_size is 16" in body, body)


def grpc_errors(client):
    x = grpcclient.InferInput("input", [1, 4], "FP32")
    x.set_data_from_numpy(IRIS[:1].astype(np.float32))
    expect_error("grpc: unknown model", lambda: client.infer("nope", [x]), grpc_code="NOT_FOUND",
                 text="model 'nope' not found")
    expect_error("grpc: unknown version", lambda: client.infer("test_model_lgbm", [x], model_version="9"),
                 grpc_code="NOT_FOUND", text="version '9'")
    wrong_shape = grpcclient.InferInput("input", [1, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3), np.float32))
    expect_error("grpc: wrong shape", lambda: client.infer("test_model_xgb", [wrong_shape]),
                 grpc_code="INVALID_ARGUMENT", text="shape [1, 3]")
    wrong_type = grpcclient.InferInput("input", [1, 4], "INT32")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), np.int32))
    expect_error("grpc: wrong datatype", lambda: client.infer("test_model_xgb", [wrong_type]),
                 grpc_code="INVALID_ARGUMENT", text="datatype INT32")
    big = grpcclient.InferInput("input", [BODY_LIMIT // 16 + 1, 4], "FP32")
    big.set_data_from_numpy(np.zeros((BODY_LIMIT // 16 + 1, 4), np.float32))
    expect_error("grpc: oversize", lambda: client.infer("test_model_xgb", [big]),
                 grpc_code="RESOURCE_EXHAUSTED", text="limit")
    # A raw message tritonclient would not build: the shape holds 8 elements, the data 4.
    stub = client._client_stub
    request = service_pb2.ModelInferRequest(model_name="test_model_xgb")
    request.inputs.add(name="input", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
    try:
        stub.ModelInfer(request)
        raise AssertionError("grpc: element count mismatch: no error")
    except Exception as error:  # grpc.RpcError
        code, details = error.code(), error.details()
        check("grpc: element count mismatch", code.name == "INVALID_ARGUMENT"
              and "holds 8 elements" in details, f"{code}: {details}")


def main():
    http = httpclient.InferenceServerClient(HTTP)
    grpc = grpcclient.InferenceServerClient(GRPC)
    server_checks(http, "http")
    server_checks(grpc, "grpc")
    infer_checks("http json", http, httpclient, binary=False)
    infer_checks("http binary", http, httpclient, binary=True)
    infer_checks("grpc", grpc, grpcclient, binary=True)
    http_errors(http)
    grpc_errors(grpc)
    # Still healthy after all of it.
    check("http: still live", http.is_server_live())
    check("grpc: still live", grpc.is_server_live())
    infer_checks("grpc again", grpc, grpcclient, binary=True)
    print("all V2 client checks passed")


if __name__ == "__main__":
    main()
