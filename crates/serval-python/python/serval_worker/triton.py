"""clearml's `triton` engine for models serval does not run natively: TorchScript with PyTorch and
TensorFlow/Keras models with TensorFlow, in the endpoint's worker. Preprocess output becomes the
model's inputs as clearml builds them for Triton: one `--input-name` → the whole output is that
input, several → a list aligned with the names; each cast to its `--input-type`. postprocess gets
one array, or a list of arrays for several outputs."""

import sys

# What each runtime needs in the worker's interpreter: (module, pip package, what it runs).
RUNTIMES = {
    "torchscript": ("torch", "torch", "TorchScript models"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "TensorFlow/Keras models"),
}


def _require(runtime):
    module, package, what = RUNTIMES[runtime]
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(
            "the triton engine runs %s with the '%s' package in the endpoint's Python worker, and "
            "%s cannot import it (%s): install it there, or let serval build the service's "
            "environment: serval config --extra-python-packages %s"
            % (what, module, sys.executable, error, package)
        ) from None


def _inputs(data, endpoint):
    import numpy as np

    names = endpoint.get("input_name") or []
    types = endpoint.get("input_type") or []
    if len(names) <= 1:
        items = [data]
    else:
        if not isinstance(data, (list, tuple)) or len(data) < len(names):
            raise ValueError(
                "preprocess must return a list of %d arrays, one per input (%s)"
                % (len(names), ", ".join(names))
            )
        items = list(data)[: len(names)]
    arrays = []
    for i, item in enumerate(items):
        dtype = types[i] if i < len(types) else None
        arrays.append(np.asarray(item, dtype=dtype) if dtype else np.asarray(item))
    return names, arrays


def _one_or_list(outputs):
    return outputs[0] if len(outputs) == 1 else outputs


class TorchScript:
    def __init__(self, torch, path, endpoint):
        self.torch = torch
        self.endpoint = endpoint
        self.model = torch.jit.load(path, map_location="cpu")
        self.model.eval()

    def infer(self, data):
        _, arrays = _inputs(data, self.endpoint)
        with self.torch.no_grad():
            out = self.model(*[self.torch.from_numpy(a) for a in arrays])
        if isinstance(out, (list, tuple)):
            return _one_or_list([o.numpy() for o in out])
        if isinstance(out, dict):
            wanted = self.endpoint.get("output_name") or list(out)
            return _one_or_list([out[n].numpy() for n in wanted])
        return out.numpy()


class TensorFlow:
    def __init__(self, tf, path, endpoint):
        import os

        self.tf = tf
        self.endpoint = endpoint
        self.signature = None
        if os.path.isdir(path):
            loaded = tf.saved_model.load(path)
            self.keep = loaded
            self.signature = loaded.signatures["serving_default"]
        else:
            self.model = tf.keras.models.load_model(path, compile=False)

    def infer(self, data):
        names, arrays = _inputs(data, self.endpoint)
        wanted = self.endpoint.get("output_name") or []
        if self.signature is not None:
            keys = names or list(self.signature.structured_input_signature[1])
            out = self.signature(**{k: self.tf.constant(a) for k, a in zip(keys, arrays)})
            order = wanted or sorted(out)
            return _one_or_list([out[n].numpy() for n in order])
        out = self.model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        if isinstance(out, dict):
            return _one_or_list([out[n].numpy() for n in (wanted or list(out))])
        if isinstance(out, (list, tuple)):
            return _one_or_list([o.numpy() for o in out])
        return out.numpy()


def load(runtime, path, endpoint):
    """The model at `path` with its runtime's library; ImportError naming the package if the
    interpreter lacks it."""
    library = _require(runtime)
    if runtime == "torchscript":
        return TorchScript(library, path, endpoint)
    return TensorFlow(library, path, endpoint)
