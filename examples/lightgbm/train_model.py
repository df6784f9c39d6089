"""Trains the lightgbm example's model: a multiclass booster on iris (100 rounds).

    python examples/lightgbm/train_model.py [--out DIR]   → DIR/lgbm_model (LightGBM text)
"""
import argparse
from pathlib import Path

import lightgbm as lgb
import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default=Path(__file__).parent, type=Path)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.1, random_state=0)
params = {
    "objective": "multiclass", "metric": "softmax", "num_class": 3, "seed": 0,
    "num_threads": 1, "deterministic": True, "force_col_wise": True, "verbose": -1,
}
booster = lgb.train(params=params, train_set=lgb.Dataset(X_train.astype(np.float32), label=y_train))
path = out / "lgbm_model"
booster.save_model(str(path))
print(path)
