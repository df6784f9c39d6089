from typing import Any

import numpy as np


class Preprocess(object):
    """Four iris measurements in, the most probable class out."""

    def __init__(self):
        pass

    def preprocess(self, body: dict, state: dict, collect_custom_statistics_fn=None) -> Any:
        # A numpy array: serval runs the LightGBM model natively on it.
        return np.array([[body["x0"], body["x1"], body["x2"], body["x3"]]], dtype=np.float32)

    def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        # data is what Booster.predict returns: one probability per class and row.
        return dict(y=int(np.argmax(data)) if isinstance(data, np.ndarray) else data)
