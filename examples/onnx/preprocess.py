from typing import Any

import numpy as np

SPECIES = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class Preprocess(object):
    """Named iris measurements in, the species name and class probabilities out."""

    def __init__(self):
        pass

    def preprocess(self, body: dict, state: dict, collect_custom_statistics_fn=None) -> Any:
        missing = [f for f in FEATURES if f not in body]
        if missing:
            raise ValueError("missing measurements: %s" % ", ".join(missing))
        # A numpy array: serval runs the ONNX model natively (ONNX Runtime in the server).
        return np.array([[body[f] for f in FEATURES]], dtype=np.float32)

    def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        # As InferenceSession.run(None, ...) returns them: [labels, probabilities].
        labels, probabilities = data
        return dict(species=SPECIES[int(labels[0])], probabilities=probabilities[0].round(4).tolist())
