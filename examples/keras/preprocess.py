"""The keras example's endpoint code, written from clearml-serving's documented behaviour: an image
as raw bytes or {"url": ...} → a 28x28 grey image → the model's `dense_input` → the most probable
digit. One difference on purpose: upstream hands the model a (1, 28, 28) array while its flags
declare [1, 784] (which fails); this file flattens the image to (1, 784)."""

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
                raise RuntimeError("Image could not be decoded")
        elif isinstance(body, dict) and "url" in body:
            image = Image.open(StorageManager.get_local_copy(remote_url=body["url"]))
        else:
            raise ValueError("send image bytes, or {\"url\": <link to an image>}")
        grey = ImageOps.grayscale(image).resize((28, 28))
        return np.array(grey, dtype=np.float32).reshape(1, 784)

    def postprocess(self, data, state, collect_custom_statistics_fn=None):
        # `data` is activation_2: one probability per digit.
        if not isinstance(data, np.ndarray):
            return dict(digit=-1)
        return dict(digit=int(data.flatten().argmax()))
