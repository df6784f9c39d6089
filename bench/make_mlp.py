"""Builds a dense ONNX network for batching tests and benchmarks, with numpy and onnx only (no
training, nothing downloaded): input float32 [N, FEATURES] → (Gemm → Relu) × LAYERS of HIDDEN
units → Gemm → Softmax → output float32 [N, 10]. Fixed random weights (seeded), so every build is
the same model. The default (256 → 2 × 2048 → 10, ~4.7 M multiply-adds per row) costs over a
millisecond per single-row call on one core: a model whose calls cost enough that merging
requests pays.

Usage: python bench/make_mlp.py --out FILE [--features 256] [--hidden 2048] [--layers 2]
       [--check]   (also runs it in onnxruntime and prints the time of a one-row call)
"""

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(features, hidden, layers, seed=7):
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    previous, width = "input", features
    for k in range(layers):
        w = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
        b = np.zeros(hidden, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"B{k}")]
        nodes += [
            helper.make_node("Gemm", [previous, f"W{k}", f"B{k}"], [f"h{k}"]),
            helper.make_node("Relu", [f"h{k}"], [f"r{k}"]),
        ]
        previous, width = f"r{k}", hidden
    w = (rng.standard_normal((width, 10)) / np.sqrt(width)).astype(np.float32)
    inits += [numpy_helper.from_array(w, "Wout"), numpy_helper.from_array(np.zeros(10, np.float32), "Bout")]
    nodes += [
        helper.make_node("Gemm", [previous, "Wout", "Bout"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["output"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "serval_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 10])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, producer_name="serval-bench", opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    onnx.save(build(args.features, args.hidden, args.layers), args.out)
    if args.check:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(args.out, options, providers=["CPUExecutionProvider"])
        x = np.ones((1, args.features), dtype=np.float32)
        session.run(None, {"input": x})
        runs = 50
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, {"input": x})
        one = (time.perf_counter() - start) / runs
        x = np.ones((64, args.features), dtype=np.float32)
        start = time.perf_counter()
        for _ in range(10):
            session.run(None, {"input": x})
        sixty_four = (time.perf_counter() - start) / 10
        print(f"one row: {one * 1e3:.2f} ms per call; 64 rows: {sixty_four * 1e3:.2f} ms per call")


if __name__ == "__main__":
    main()
