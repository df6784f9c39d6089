"""The pytorch example's endpoint code, written from clearml-serving's documented behaviour: an image
arrives as raw bytes (`Content-Type: image/jpeg`) or as {"url": ...}; it becomes a 28x28 grey image
in an array of shape (1, 28, 28), the model's INPUT__0; the reply is the most probable digit."""

import io

import numpy as np
from PIL import Image, ImageOps

from clearml import StorageManager


class Preprocess(object):
    def preprocess(self, body, state, collect_custom_statistics_fn=None):
        if isinstance(body, bytes):
            try:
                image = Image.open(io.BytesIO(body)).convert("RGB")
            except Exception:
                # Not a ValueError on purpose: a broken image is answered 500, as upstream.
                raise RuntimeError("Image could not be decoded")
        elif isinstance(body, dict) and "url" in body:
            image = Image.open(StorageManager.get_local_copy(remote_url=body["url"]))
        else:
            raise ValueError("send image bytes, or {\"url\": <link to an image>}")
        grey = ImageOps.grayscale(image).resize((28, 28))
        return np.array([np.array(grey)])

    def postprocess(self, data, state, collect_custom_statistics_fn=None):
        # `data` is OUTPUT__0: one probability per digit.
        if not isinstance(data, np.ndarray):
            return dict(digit=-1)
        return dict(digit=int(data.flatten().argmax()))
