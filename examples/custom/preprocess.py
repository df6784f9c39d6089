from typing import Any

import joblib
import numpy as np


class Preprocess(object):
    """A custom engine: this class loads the model and runs it."""

    def __init__(self):
        self._model = None

    def load(self, local_file_name: str) -> Any:
        # Called once with the endpoint's model file; whatever is returned becomes the model.
        self._model = joblib.load(local_file_name)
        return self._model

    def preprocess(self, body: dict, state: dict, collect_custom_statistics_fn=None) -> Any:
        # The upstream example used np.float, which numpy 1.24 removed; np.float64 is the fix.
        return np.array(body.get("features", []), dtype=np.float64)

    def process(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> Any:
        return self._model.predict(np.atleast_2d(data))

    def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        return dict(predict=data.tolist() if isinstance(data, np.ndarray) else data)
