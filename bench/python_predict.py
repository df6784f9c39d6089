"""The libraries' own predict (or, with --explain, their TreeSHAP contributions), timed the way
the Rust benches time serval's evaluators.

Single row: one call on a 1-row numpy array. 1,000 rows: one call on 1,000 rows. One thread
everywhere (nthread=1 / num_threads=1, OMP_NUM_THREADS=1).
- predict: XGBoost Booster.inplace_predict (its fastest path, no DMatrix; Booster.predict on a
  reused DMatrix would return XGBoost's prediction cache instead of predicting); LightGBM
  Booster.predict.
- --explain: XGBoost Booster.predict(DMatrix, pred_contribs=True), the DMatrix built in the timed
  call (a client explaining new rows must build one; its construction alone is printed too);
  LightGBM Booster.predict(x, pred_contrib=True).

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/python_predict.py [--explain]
Prints one line per model: name, single-row µs (median), 1,000-row ms (median).
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

import lightgbm
import numpy as np
import xgboost

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "public"
MODELS = [
    ("xgb_reg_diabetes", "xgb_reg_diabetes.json", "diabetes"),
    ("xgb_bin_breast_cancer", "xgb_bin_breast_cancer.json", "breast_cancer"),
    ("xgb_multi_iris", "xgb_multi_iris.json", "iris"),
    ("lgbm_reg_diabetes", "lgbm_reg_diabetes.txt", "diabetes"),
    ("lgbm_bin_breast_cancer", "lgbm_bin_breast_cancer.txt", "breast_cancer"),
    ("lgbm_multi_iris", "lgbm_multi_iris.txt", "iris"),
]


def median_seconds(fn, repeat, number):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def main(explain):
    refs = json.loads((FIXTURES / "refs.json").read_text())
    print(f"{'model':26} {'single row (us)':>16} {'1000 rows (ms)':>15}" + (f" {'DMatrix 1000 (ms)':>18}" if explain else ""))
    for name, file, dataset in MODELS:
        batch = np.array(refs["inputs"][dataset]["batch"]["data"], dtype=np.float64)
        batch = np.where(np.isnan(batch), np.nan, batch).astype(np.float32)
        one = batch[:1]
        thousand = np.resize(batch, (1000, batch.shape[1]))
        matrix = ""
        if name.startswith("xgb"):
            booster = xgboost.Booster()
            booster.load_model(str(FIXTURES / file))
            booster.set_param({"nthread": 1})
            if explain:
                dmatrix = lambda x: xgboost.DMatrix(x, missing=np.nan, nthread=1)
                single = lambda: booster.predict(dmatrix(one), pred_contribs=True)
                many = lambda: booster.predict(dmatrix(thousand), pred_contribs=True)
                matrix = f" {median_seconds(lambda: dmatrix(thousand), 7, 20) * 1e3:18.3f}"
            else:
                single = lambda: booster.inplace_predict(one, missing=np.nan)
                many = lambda: booster.inplace_predict(thousand, missing=np.nan)
        else:
            booster = lightgbm.Booster(model_file=str(FIXTURES / file))
            if explain:
                one, thousand = one.astype(np.float64), thousand.astype(np.float64)
            single = lambda: booster.predict(one, num_threads=1, pred_contrib=explain)
            many = lambda: booster.predict(thousand, num_threads=1, pred_contrib=explain)
            matrix = f" {'-':>18}" if explain else ""
        s = median_seconds(single, 7, 100 if explain else 200)
        m = median_seconds(many, 5 if explain else 7, 5 if explain else 20)
        print(f"{name:26} {s * 1e6:16.1f} {m * 1e3:15.3f}{matrix}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main("--explain" in sys.argv[1:])
