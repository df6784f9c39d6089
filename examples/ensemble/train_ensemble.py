"""Trains the ensemble example's model: a VotingRegressor (KNN + random forest) on two blobs.

    python examples/ensemble/train_ensemble.py [--out DIR]   → DIR/ensemble-vr.pkl
"""
import argparse
from pathlib import Path

import joblib
from sklearn.datasets import make_blobs
from sklearn.ensemble import RandomForestRegressor, VotingRegressor
from sklearn.neighbors import KNeighborsRegressor

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default=Path(__file__).parent, type=Path)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

X, y = make_blobs(n_samples=100, centers=2, n_features=2, random_state=1)
knn = KNeighborsRegressor(n_neighbors=5)
forest = RandomForestRegressor(n_estimators=50, random_state=0)
model = VotingRegressor([("knn", knn), ("rf", forest)]).fit(X, y)
path = out / "ensemble-vr.pkl"
joblib.dump(model, path, compress=9)
print(path)
