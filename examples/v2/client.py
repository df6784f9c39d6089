"""Calls serval with NVIDIA's Triton client (`pip install 'tritonclient[http,grpc]'`) over the Open
Inference Protocol: HTTP (binary tensors, tritonclient's default) and gRPC, on the quickstart's
`iris` endpoint, version 2 (a LightGBM classifier: input `input` [-1, 4], outputs `label` and
`probabilities`; tree models take FP32 or FP64).

    python examples/v2/client.py [HTTP_HOST:PORT] [GRPC_HOST:PORT]     # default localhost:8080 localhost:8081
"""
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

http_url = sys.argv[1] if len(sys.argv) > 1 else "localhost:8080"
grpc_url = sys.argv[2] if len(sys.argv) > 2 else "localhost:8081"
rows = np.array([[6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]], dtype=np.float32)

http = httpclient.InferenceServerClient(http_url)
print("http metadata:", http.get_model_metadata("iris", "2"))
x = httpclient.InferInput("input", list(rows.shape), "FP32")
x.set_data_from_numpy(rows)
result = http.infer("iris", [x], model_version="2")
print("http labels:", result.as_numpy("label"))
print("http probabilities:", result.as_numpy("probabilities"))

grpc = grpcclient.InferenceServerClient(grpc_url)
x = grpcclient.InferInput("input", list(rows.shape), "FP32")
x.set_data_from_numpy(rows)
result = grpc.infer("iris", [x], model_version="2")
print("grpc labels:", result.as_numpy("label"))
print("grpc probabilities:", result.as_numpy("probabilities"))
