"""Trains the ONNX example's model: a LogisticRegression on iris, exported with skl2onnx.

    python examples/onnx/train_model.py [--out DIR]   → DIR/iris-logreg.onnx
"""
import argparse
from pathlib import Path

from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default=Path(__file__).parent, type=Path)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=1000).fit(X, y)
# A plain probability tensor instead of a list of dicts (ZipMap): simpler to post-process.
onx = to_onnx(model, X[:1].astype("float32"), options={"zipmap": False}, target_opset=15)
path = out / "iris-logreg.onnx"
path.write_bytes(onx.SerializeToString())
print(path)
