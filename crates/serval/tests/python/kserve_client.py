"""KServe's Python SDK (`kserve` 0.21) against a serval server: health, model readiness and
inference over REST v2 (JSON and binary tensors) and gRPC. Prints one line per check; exits 1 on
the first that fails.

    kserve_client.py HTTP_HOST:PORT GRPC_HOST:PORT MODEL
"""
import asyncio
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.inference_client import InferenceGRPCClient

ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def check(what, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + what + (f": {detail}" if detail else ""), flush=True)
    if not condition:
        sys.exit(1)


def request(model, binary):
    tensor = InferInput(name="input", shape=[1, 4], datatype="FP32")
    tensor.set_data_from_numpy(ROW, binary_data=binary)
    return InferRequest(model_name=model, infer_inputs=[tensor])


def outputs(response):
    return {o.name: o.as_numpy().tolist() for o in response.outputs}


async def main(http, grpc_address, model):
    base = "http://" + http
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    check("rest: server live", await client.is_server_live(base))
    check("rest: server ready", await client.is_server_ready(base))
    check("rest: model ready", await client.is_model_ready(base, model))
    json_answer = outputs(await client.infer(base, request(model, False), model_name=model))
    check("rest: infer (JSON)", json_answer.get("label") == [0], json_answer)
    binary_answer = outputs(await client.infer(base, request(model, True), model_name=model))
    check("rest: infer (binary tensors)", binary_answer == json_answer, binary_answer)
    grpc = InferenceGRPCClient(grpc_address)
    grpc_answer = outputs(await grpc.infer(request(model, False)))
    check("grpc: infer", grpc_answer == json_answer, grpc_answer)
    await client.close()
    print("all KServe SDK checks passed")


asyncio.run(main(*sys.argv[1:4]))
