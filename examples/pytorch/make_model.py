"""Builds an MNIST-shaped ONNX model and digit images for the pytorch example, with no framework
and nothing downloaded (clearml-serving's example trains a PyTorch network and exports TorchScript;
PyTorch is several GB, so serval's example builds an ONNX model of the same shape instead).

The model: INPUT__0 float32 [1, 28, 28] (grey levels 0..255) → flatten → one linear layer →
softmax → OUTPUT__0 float32 [-1, 10]. Its weights are ten "digit" templates — digit k is a bright
horizontal band at rows 2k+4..2k+5 — so it really tells the images below apart.

Usage: python make_model.py --out DIR   → DIR/model.onnx, DIR/<k>.png for k in 0..9, DIR/5.jpg
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def template(digit):
    image = np.zeros((28, 28), dtype=np.float32)
    image[2 * digit + 4 : 2 * digit + 6, 4:24] = 255.0
    return image


def build_model():
    weights = np.stack([template(k).flatten() / 255.0 for k in range(10)], axis=1)  # [784, 10]
    weights -= weights.mean(axis=1, keepdims=True)
    bias = np.zeros(10, dtype=np.float32)
    nodes = [
        helper.make_node("Reshape", ["INPUT__0", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], alpha=1.0 / 255.0),
        helper.make_node("Softmax", ["logits"], ["OUTPUT__0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mnist_like",
        [helper.make_tensor_value_info("INPUT__0", TensorProto.FLOAT, [1, 28, 28])],
        [helper.make_tensor_value_info("OUTPUT__0", TensorProto.FLOAT, [None, 10])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 784], dtype=np.int64), "shape"),
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias, "B"),
        ],
    )
    model = helper.make_model(
        graph, producer_name="serval-example", opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    out = parser.parse_args().out
    os.makedirs(out, exist_ok=True)
    onnx.save(build_model(), os.path.join(out, "model.onnx"))
    from PIL import Image

    for digit in range(10):
        Image.fromarray(template(digit).astype(np.uint8)).convert("RGB").save(os.path.join(out, "%d.png" % digit))
    Image.fromarray(template(5).astype(np.uint8)).convert("RGB").save(os.path.join(out, "5.jpg"), quality=90)
    print(os.path.join(out, "model.onnx"))


if __name__ == "__main__":
    main()
