import asyncio
from typing import Any


class Preprocess(object):
    """The pipeline for the custom_async engine: both sub-requests run at the same time."""

    def __init__(self):
        pass

    async def postprocess(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> dict:
        return data

    async def process(self, data: Any, state: dict, collect_custom_statistics_fn=None) -> Any:
        # With custom_async, send_request returns a coroutine.
        predict_a = self.send_request(endpoint="/test_model_sklearn_a/", version=None, data=data)
        predict_b = self.send_request(endpoint="/test_model_sklearn_b/", version=None, data=data)
        predict_a, predict_b = await asyncio.gather(predict_a, predict_b)
        if not predict_b or not predict_a:
            raise ValueError("Error, could not get predictions from sub-models")
        return dict(y=0.5 * predict_a["y"][0] + 0.5 * predict_b["y"][0])
