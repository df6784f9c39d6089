from typing import Any

import numpy as np
import xgboost as xgb


class Preprocess(object):
    """Four iris measurements in, the regressed label out."""

    def __init__(self):
        pass

    def preprocess(self, body: dict, state: dict, collect_custom_statistics_fn=None) -> Any:
        # A DMatrix, as the upstream example: only the XGBoost library understands it, so serval
        # runs this endpoint's model with the library in the worker. Return the list (or a numpy
        # array) instead and serval runs the model natively, much faster.
        return xgb.DMatrix([[body["x0"], body["x1"], body["x2"], body["x3"]]])

    def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        # data is what Booster.predict returned: a numpy array of one value per row.
        return dict(y=data.tolist() if isinstance(data, np.ndarray) else data)
