"""Frames between the serval server and a worker, and how values cross them.

A frame is: header length H (u32, big endian), blob count N (u32), N blob lengths (u64 each), H
bytes of UTF-8 JSON, then the N blobs. Inside the JSON,

  {"__serval_blob__": i, "dtype": "float32", "shape": [2, 4]}  an n-d array; blob i holds its
                                                               row-major little-endian data
  {"__serval_bytes__": i}                                     a bytes value; blob i holds it

so tensors and binary bodies travel as raw bytes, never base64.
"""

import json
import math
import struct
import sys

BLOB = "__serval_blob__"
BYTES = "__serval_bytes__"

# Array element types the server understands, with their struct codes.
DTYPES = {"float32": "f", "float64": "d", "int64": "q", "int32": "i", "bool": "?"}


class ProtocolError(Exception):
    pass


def _read_exact(stream, n):
    data = stream.read(n)
    if data is None or len(data) != n:
        if not data:
            return None
        raise ProtocolError("the server closed the channel in the middle of a frame")
    return data


def read_frame(stream):
    """The next (header, blobs) from the server, or None when the channel is closed."""
    head = _read_exact(stream, 8)
    if head is None:
        return None
    header_len, count = struct.unpack(">II", head)
    lengths = struct.unpack(">%dQ" % count, _read_exact(stream, 8 * count)) if count else ()
    header = json.loads(_read_exact(stream, header_len).decode("utf-8"))
    blobs = [_read_exact(stream, n) if n else b"" for n in lengths]
    return header, blobs


def encode_frame(header, blobs=()):
    data = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    parts = [struct.pack(">II", len(data), len(blobs))]
    if blobs:
        parts.append(struct.pack(">%dQ" % len(blobs), *[len(b) for b in blobs]))
    parts.append(data)
    parts.extend(blobs)
    return b"".join(parts)


def _numpy():
    """numpy if the interpreter has it (imported lazily: the worker itself does not need it)."""
    try:
        import numpy

        return numpy
    except ImportError:
        return None


def decode(value, blobs):
    """A value from the server: arrays become numpy arrays (nested lists without numpy)."""
    if isinstance(value, dict):
        if BLOB in value:
            return _array(blobs[value[BLOB]], value["dtype"], value["shape"])
        if BYTES in value:
            return blobs[value[BYTES]]
        return {k: decode(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, blobs) for v in value]
    return value


# The most dimensions an array may have: the server refuses more (wire/tensor.rs MAX_RANK); this
# side checks again before nesting anything.
MAX_RANK = 32


def _array(data, dtype, shape):
    if len(shape) > MAX_RANK:
        raise ValueError("an array of %d dimensions; at most %d are accepted" % (len(shape), MAX_RANK))
    np = _numpy()
    if np is not None:
        return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()
    count = len(data) // struct.calcsize("<" + DTYPES[dtype])
    flat = list(struct.unpack("<%d%s" % (count, DTYPES[dtype]), data))

    def nest(items, dims):
        if len(dims) <= 1:
            return items
        step = len(items) // dims[0] if dims[0] else 0
        return [nest(items[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]

    return nest(flat, list(shape)) if shape else flat[0]


def to_json(value, where):
    """A user result as plain JSON values: numpy arrays and scalars are converted, bytes become
    their UTF-8 text (as FastAPI answers them in clearml-serving), NaN/inf become null; anything
    else is refused, naming its type."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, (str, int, float, bool)) or k is None:
                key = k if isinstance(k, str) else json.dumps(k)
            elif hasattr(k, "item") and type(k).__module__ == "numpy":
                key = str(k.item())
            else:
                raise TypeError(
                    "%s returned a dict key of type '%s', which JSON cannot hold" % (where, _type_name(k))
                )
            out[key] = to_json(v, where)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v, where) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise TypeError(
                "%s returned bytes that are not UTF-8 text (JSON cannot hold them; "
                "return base64.b64encode(data).decode() for binary data)" % where
            ) from None
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "tolist"):
        # ndarray and numpy scalars alike; object arrays go through the checks again.
        return to_json(value.tolist(), where)
    raise TypeError(
        "%s returned an object of type '%s', which is not JSON serialisable "
        "(return dicts, lists, numbers, strings, numpy arrays or bytes)" % (where, _type_name(value))
    )


def _type_name(value):
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)


def to_wire(value, blobs):
    """Preprocess output for a model the server runs natively, or None when the value is not
    array-like (the worker then runs the model's own library in Python).

    Array-like: numpy arrays of numbers or booleans, (nested) lists and tuples of numbers, dicts of
    those (named features or named inputs), pandas DataFrames (as named columns)."""
    module = type(value).__module__ or ""
    if module.startswith("pandas") and type(value).__name__ == "DataFrame":
        return to_wire(value.to_dict(orient="list"), blobs)
    if module == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
        np = _numpy()
        kind = value.dtype.kind
        if kind == "f":
            target = "float64" if value.dtype.itemsize > 4 else "float32"
        elif kind in "iu":
            target = "int64" if value.dtype.itemsize > 4 or kind == "u" else "int32"
        elif kind == "b":
            target = "bool"
        else:
            return None
        array = np.ascontiguousarray(value, dtype=np.dtype(target).newbyteorder("<"))
        blobs.append(array.tobytes())
        return {BLOB: len(blobs) - 1, "dtype": target, "shape": list(array.shape)}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                return None
            item = to_wire(v, blobs)
            if item is None and v is not None:
                return None
            out[k] = item
        return out
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            item = to_wire(v, blobs)
            if item is None and v is not None:
                return None
            out.append(item)
        return out
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


class Channel:
    """The worker's side of the channel: frames in from the server, frames out to it."""

    def __init__(self, reader, writer):
        self._reader = reader
        self._writer = writer

    def read(self):
        return read_frame(self._reader)

    def send(self, header, blobs=()):
        self._writer.write(encode_frame(header, blobs))
        self._writer.flush()


def log(message):
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
