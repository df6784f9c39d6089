from typing import Any

import numpy as np


class Preprocess(object):
    """Turns {"x0": .., "x1": ..} into one row for the model and the prediction into {"y": [...]}."""

    def __init__(self):
        # Called once per endpoint (per worker process), before any request.
        pass

    def preprocess(self, body: dict, state: dict, collect_custom_statistics_fn=None) -> Any:
        # A missing key gives None, which the model then refuses (→ HTTP 500, as clearml-serving).
        return [[body.get("x0", None), body.get("x1", None)]]

    def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        # data is what model.predict returned: a numpy array.
        return dict(y=data.tolist() if isinstance(data, np.ndarray) else data)
