from typing import Any


class Preprocess(object):
    """A pipeline: asks two other endpoints and averages their answers."""

    def __init__(self):
        pass

    def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        return data

    def process(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> Any:
        # send_request(endpoint, version, data) serves `data` on another endpoint of this service
        # and returns its JSON reply, or None if that request failed.
        predict_a = self.send_request(endpoint="/test_model_sklearn_a/", version=None, data=data)
        predict_b = self.send_request(endpoint="/test_model_sklearn_b/", version=None, data=data)
        if not predict_b or not predict_a:
            raise ValueError("Error, could not get predictions from sub-models")
        return dict(y=0.5 * predict_a["y"][0] + 0.5 * predict_b["y"][0])
