"""Trains the custom example's model: a LogisticRegression on three-feature blobs.

    python examples/custom/train_model.py [--out DIR]   → DIR/custom-model.pkl
"""
import argparse
from pathlib import Path

import joblib
from sklearn.datasets import make_blobs
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default=Path(__file__).parent, type=Path)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

X, y = make_blobs(n_samples=100, centers=2, n_features=3, random_state=1)
model = LogisticRegression().fit(X, y)
path = out / "custom-model.pkl"
joblib.dump(model, path)
print(path)
