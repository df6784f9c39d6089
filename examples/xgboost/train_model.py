"""Trains the xgboost example's model: a booster regressing the iris labels (100 rounds).

    python examples/xgboost/train_model.py [--out DIR]   → DIR/xgb_model (UBJSON, as XGBoost
    writes a path without an extension)
"""
import argparse
from pathlib import Path

import xgboost as xgb
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default=Path(__file__).parent, type=Path)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)

X, y = load_iris(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=100)
train = xgb.DMatrix(X_train, label=y_train)
test = xgb.DMatrix(X_test, label=y_test)
params = {"objective": "reg:squarederror", "eval_metric": "rmse", "seed": 0, "nthread": 1}
booster = xgb.train(params, train, num_boost_round=100, evals=[(train, "train"), (test, "test")], verbose_eval=0)
path = out / "xgb_model"
booster.save_model(str(path))
print(path)
