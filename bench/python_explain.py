"""The libraries' own TreeSHAP contributions, timed the way the Rust benches time serval's.

XGBoost: Booster.predict(DMatrix, pred_contribs=True), the DMatrix built in the timed call (a
client explaining new rows must build one; its construction alone is printed too). LightGBM:
Booster.predict(x, pred_contrib=True). One thread everywhere (nthread=1 / num_threads=1).

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/python_explain.py
Prints one line per model: name, single-row µs (median), 1,000-row ms (median).
"""
import json
import os
import statistics
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


def main():
    refs = json.loads((FIXTURES / "refs.json").read_text())
    print(f"{'model':26} {'single row (us)':>16} {'1000 rows (ms)':>15} {'DMatrix 1000 (ms)':>18}")
    for name, file, dataset in MODELS:
        batch = np.array(refs["inputs"][dataset]["batch"]["data"], dtype=np.float64)
        batch = np.where(np.isnan(batch), np.nan, batch).astype(np.float32)
        one = batch[:1]
        thousand = np.resize(batch, (1000, batch.shape[1]))
        matrix = "-"
        if name.startswith("xgb"):
            booster = xgboost.Booster()
            booster.load_model(str(FIXTURES / file))
            booster.set_param({"nthread": 1})
            single = lambda: booster.predict(xgboost.DMatrix(one, missing=np.nan, nthread=1), pred_contribs=True)
            many = lambda: booster.predict(xgboost.DMatrix(thousand, missing=np.nan, nthread=1), pred_contribs=True)
            matrix = f"{median_seconds(lambda: xgboost.DMatrix(thousand, missing=np.nan, nthread=1), 7, 20) * 1e3:.3f}"
        else:
            booster = lightgbm.Booster(model_file=str(FIXTURES / file))
            one64, thousand64 = one.astype(np.float64), thousand.astype(np.float64)
            single = lambda: booster.predict(one64, pred_contrib=True, num_threads=1)
            many = lambda: booster.predict(thousand64, pred_contrib=True, num_threads=1)
        s = median_seconds(single, 7, 100)
        m = median_seconds(many, 5, 5)
        print(f"{name:26} {s * 1e6:16.1f} {m * 1e3:15.3f} {matrix:>18}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
