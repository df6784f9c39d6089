"""The worker loop: load one endpoint's code and model, then answer the server's requests with
clearml-serving's `Preprocess` contract (preprocess → process → postprocess, a fresh `state` per
request, `collect_custom_statistics_fn`, `send_request`)."""

import asyncio
import collections
import contextvars
import importlib.util
import inspect
import itertools
import os
import re
import sys
import threading
import time
import traceback
import types
import zipfile

from . import protocol, triton
from .protocol import log

# The request a piece of user code is running for (send_request passes it to the server, which
# then bounds the sub-request by that request's deadline).
CURRENT_REQUEST = contextvars.ContextVar("serval_request", default=None)

# Engines whose model the worker loads with the library when Preprocess.load gives none.
LIBRARY_ENGINES = ("sklearn", "xgboost", "lightgbm", "onnx")


def _open_channel():
    """Takes stdin and stdout for the protocol and points fds 0 and 1 elsewhere, so `input()`
    cannot eat frames and `print()` (or a C library writing to fd 1) lands in the log instead of
    the channel."""
    reader = os.fdopen(os.dup(0), "rb")
    writer = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return protocol.Channel(reader, writer)


def native_linear(model):
    """The parameters of a plain scikit-learn linear model (exactly LogisticRegression,
    LinearRegression, Ridge, Lasso or ElasticNet, not a subclass or a pipeline), for the server to
    run its `predict` natively; None for anything else."""
    try:
        import numpy as np
        from sklearn import linear_model
    except ImportError:
        return None
    kinds = {
        linear_model.LogisticRegression: "logistic",
        linear_model.LinearRegression: "linear",
        linear_model.Ridge: "linear",
        linear_model.Lasso: "linear",
        linear_model.ElasticNet: "linear",
    }
    kind = kinds.get(type(model))
    if kind is None:
        return None
    try:
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
    except (AttributeError, TypeError, ValueError):
        return None
    if coef.ndim not in (1, 2) or not np.all(np.isfinite(coef)) or not np.all(np.isfinite(intercept)):
        return None
    out = {
        "kind": kind,
        "estimator": type(model).__name__,
        "coef": np.atleast_2d(coef).tolist(),
        "intercept": intercept.tolist(),
        "one_output": coef.ndim == 1,
    }
    if kind == "logistic":
        classes = np.asarray(model.classes_)
        if classes.dtype.kind not in "iu":
            return None
        out["classes"] = [int(c) for c in classes]
    return out


def drive(coroutine):
    """Runs a coroutine that never suspends (sync mode: nothing in it awaits a real future)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a synchronous stage tried to suspend")


def _class_text(error):
    return str(type(error))


def _find_package_root(folder):
    if os.path.isfile(os.path.join(folder, "__init__.py")):
        return folder
    entries = [e for e in os.listdir(folder) if not e.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and os.path.isfile(os.path.join(folder, entries[0], "__init__.py")):
        return os.path.join(folder, entries[0])
    raise ValueError("the preprocess package has no __init__.py at its top level")


def import_code(code):
    """Imports the endpoint's preprocess code: a single file as a module, a folder (or zip) as a
    package whose sibling modules are importable."""
    kind, path = code["kind"], code["path"]
    module_name = re.sub(r"\W", "_", code["name"]) or "preprocess"
    if kind == "file":
        search = os.path.dirname(path)
        spec = importlib.util.spec_from_file_location(module_name, path)
    else:
        folder = path
        if kind == "zip":
            folder = code["extract_to"]
            if not os.path.isdir(folder):
                staging = "%s.%d.%d.tmp" % (folder, os.getpid(), threading.get_ident())
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(staging)
                try:
                    os.rename(staging, folder)
                except OSError:
                    pass  # another worker extracted it first
        root = _find_package_root(folder)
        search = root
        spec = importlib.util.spec_from_file_location(
            module_name, os.path.join(root, "__init__.py"), submodule_search_locations=[root]
        )
    if search not in sys.path:
        sys.path.insert(0, search)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class Worker:
    def __init__(self, channel):
        self.channel = channel
        self.send_lock = threading.Lock()
        self.loop = None
        self.inbox = None
        self.engine = None
        self.instance = None
        self.model = None
        self.model_path = None
        self.runtime = None
        self.endpoint = {}
        self.library_model = None
        self.concurrent = False
        self.private_loop = None
        self.read_lock = threading.Lock()
        self.backlog = collections.deque()
        self.call_timeout = 600.0
        self.calls = {}
        self.call_ids = itertools.count(1)
        self.parked = {}
        self.tasks = set()
        self.running = {}

    # ---- channel

    def send(self, header, blobs=()):
        with self.send_lock:
            self.channel.send(header, blobs)

    def read_loop(self):
        """Reader thread: call results are resolved here (a sync send_request is waiting on the
        main thread); everything else goes to the event loop in order."""
        try:
            while True:
                frame = self.channel.read()
                if frame is None:
                    break
                header, blobs = frame
                if header.get("op") == "call_result":
                    self.resolve_call(header)
                else:
                    self.loop.call_soon_threadsafe(self.inbox.put_nowait, (header, blobs))
        except Exception as error:  # a broken channel: nothing sensible is left to do
            log("serval worker: channel error: %s" % error)
        os._exit(0)

    def resolve_call(self, header):
        entry = self.calls.pop(header.get("call"), None)
        if entry is None:
            return
        if isinstance(entry, asyncio.Future):
            def settle(future=entry, value=header):
                if not future.done():
                    future.set_result(value)

            entry.get_loop().call_soon_threadsafe(settle)
        else:
            entry[1] = header
            entry[0].set()

    async def resolve(self, value):
        """A user method's result: awaited if it is awaitable (in sync mode on a private event
        loop, so `async def` methods work with every engine)."""
        if not inspect.isawaitable(value):
            return value
        if self.concurrent:
            return await value
        if self.private_loop is None:
            self.private_loop = asyncio.new_event_loop()
        return self.private_loop.run_until_complete(value)

    def pump(self):
        """Sync mode: reads one frame (the caller holds read_lock). Call results go to their
        waiter, everything else to the backlog. False when the channel is closed."""
        frame = self.channel.read()
        if frame is None:
            return False
        if frame[0].get("op") == "call_result":
            self.resolve_call(frame[0])
        else:
            self.backlog.append(frame)
        return True

    # ---- send_request

    def _call_header(self, endpoint, version, data):
        endpoint = str(endpoint).strip("/")
        if version is not None:
            version = str(version).strip("/") or None
        return {
            "op": "call",
            "id": CURRENT_REQUEST.get(),
            "endpoint": endpoint,
            "version": version,
            "data": protocol.to_json(data, "send_request data"),
        }

    @staticmethod
    def _call_value(reply, endpoint):
        if reply is None:
            log("send_request to '%s' got no answer in time" % endpoint)
            return None
        if reply.get("ok"):
            return reply.get("value")
        log("send_request to '%s' failed: %s" % (endpoint, reply.get("error")))
        return None

    def sync_send_request(self, endpoint, version=None, data=None):
        """clearml's send_request: the endpoint's JSON reply, or None if the call failed."""
        header = self._call_header(endpoint, version, data)
        call = next(self.call_ids)
        entry = [threading.Event(), None]
        self.calls[call] = entry
        header["call"] = call
        self.send(header)
        deadline = time.monotonic() + self.call_timeout
        # Whoever holds the read lock reads the channel for everyone (the main thread is the one
        # waiting here, unless user code calls from threads of its own).
        while not entry[0].is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.calls.pop(call, None)
                break
            if self.read_lock.acquire(timeout=min(remaining, 0.05)):
                try:
                    if not entry[0].is_set() and not self.pump():
                        os._exit(0)
                finally:
                    self.read_lock.release()
        return self._call_value(entry[1], endpoint)

    async def async_send_request(self, endpoint, version=None, data=None):
        header = self._call_header(endpoint, version, data)
        call = next(self.call_ids)
        future = asyncio.get_running_loop().create_future()
        self.calls[call] = future
        header["call"] = call
        self.send(header)
        try:
            reply = await asyncio.wait_for(future, self.call_timeout)
        except asyncio.TimeoutError:
            self.calls.pop(call, None)
            reply = None
        return self._call_value(reply, endpoint)

    # ---- load

    async def load(self, msg):
        self.engine = msg["engine"]
        self.call_timeout = float(msg.get("call_timeout") or 600.0)
        self.model_path = msg.get("model_path")
        self.runtime = msg.get("runtime")
        self.endpoint = msg.get("endpoint") or {}
        code = msg.get("code")
        name = code["name"] if code else None
        try:
            if code:
                module = import_code(code)
                cls = getattr(module, "Preprocess", None)
                if cls is None:
                    raise ValueError("the code defines no class named 'Preprocess'")
                self.instance = cls()
                self.instance.model_endpoint = types.SimpleNamespace(**msg.get("endpoint", {}))
                send = self.async_send_request if self.concurrent else self.sync_send_request
                self.instance.send_request = send
            loader = getattr(self.instance, "load", None)
            model = None
            if callable(loader):
                model = await self.resolve(loader(self.model_path))
            self.model = model
            if model is None and self.engine == "sklearn":
                self.library_model = self._load_library_model()
            if self.engine == "triton":
                self._load_triton()
        except Exception as error:
            what = "preprocess code '%s'" % name if name else "the model"
            log(traceback.format_exc())
            self.send({"op": "load_error", "error": "Failed loading %s: %s: %s" % (what, type(error).__name__, error)})
            return
        methods = [m for m in ("load", "preprocess", "process", "postprocess") if callable(getattr(self.instance, m, None))]
        loaded = {"op": "loaded", "custom_model": self.model is not None, "methods": methods, "pid": os.getpid()}
        if self.engine == "sklearn" and self.model is None:
            linear = native_linear(self.library_model)
            if linear is not None:
                loaded["native_model"] = linear
        self.send(loaded)

    def _native_takes(self, data):
        """Whether the server's native model takes this preprocess output. A scikit-learn linear
        model run natively takes only a clean 2-d numeric array (or nested lists of one): for
        anything else — None or NaN values, 1-d input, DataFrames with feature names — the
        worker's own scikit-learn decides, so answers and errors stay exactly the library's."""
        if self.engine != "sklearn":
            return True
        try:
            import numpy as np
        except ImportError:
            return False
        if not isinstance(data, (list, tuple, np.ndarray)):
            return False
        try:
            array = np.asarray(data)
        except (ValueError, TypeError):
            return False
        return array.ndim == 2 and array.dtype.kind in "biuf" and bool(np.isfinite(array).all())

    def _triton_process(self):
        """clearml's triton engine: a `Preprocess.process` replaces the model call."""
        return self.engine == "triton" and callable(getattr(self.instance, "process", None))

    def _load_triton(self):
        if self._triton_process() or self.runtime == "upstream":
            return  # the code runs the model, or the server forwards it to a V2 server
        if self.runtime:
            self.library_model = triton.load(self.runtime, self.model_path, self.endpoint)
        elif self.model_path is None:
            raise ValueError("the triton engine needs a model, or a Preprocess.process that runs one")

    def _load_library_model(self):
        path = self.model_path
        if self.engine == "sklearn":
            if path is None:
                raise ValueError("the sklearn engine needs a model file")
            try:
                import joblib
            except ImportError:
                import pickle

                with open(path, "rb") as f:
                    return pickle.load(f)
            return joblib.load(path)
        if self.engine == "xgboost":
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(path)
            return booster
        if self.engine == "lightgbm":
            import lightgbm

            return lightgbm.Booster(model_file=path)
        if self.engine == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            first = session.get_inputs()[0].name

            class OnnxModel:
                def predict(self, data):
                    feed = data if isinstance(data, dict) else {first: data}
                    outputs = session.run(None, feed)
                    return outputs[0] if len(outputs) == 1 else outputs

            return OnnxModel()
        return None

    # ---- requests

    async def stage(self, name, data, state, fn, timings):
        method = getattr(self.instance, name, None)
        if not callable(method):
            return data
        start = time.perf_counter()
        try:
            return await self.resolve(method(data, state, fn))
        finally:
            timings[name] = time.perf_counter() - start

    async def process(self, data, state, fn, timings):
        if self.engine in ("custom", "custom_async") or self._triton_process():
            if callable(getattr(self.instance, "process", None)):
                return await self.stage("process", data, state, fn, timings)
            return None
        model = self.model
        if model is None:
            if self.library_model is None:
                self.library_model = self._load_library_model()
            model = self.library_model
        start = time.perf_counter()
        try:
            if self.engine == "triton":
                return model.infer(data)
            return model.predict(data)
        finally:
            timings["process"] = time.perf_counter() - start

    async def infer(self, msg, blobs):
        rid = msg["id"]
        token = CURRENT_REQUEST.set(rid)
        stats = {} if msg.get("sampled") else None
        fn = stats.update if stats is not None else None
        state, timings = dict(msg.get("state") or {}), {}
        path = "python"
        try:
            body = protocol.decode(msg.get("body"), blobs)
            data = await self.stage("preprocess", body, state, fn, timings)
            if msg.get("native") and not self._triton_process() and self._native_takes(data):
                out_blobs = []
                wire = protocol.to_wire(data, out_blobs)
                if wire is None and self.engine == "triton":
                    raise ValueError(
                        "for the triton engine preprocess must return a numpy array (or a list of "
                        "arrays, one per --input-name); it returned %s" % type(data).__name__
                    )
                if wire is not None:
                    self.parked[rid] = (state, fn, stats, timings)
                    self.send({"op": "pre", "id": rid, "data": wire}, out_blobs)
                    return
                path = "library"
            out = await self.process(data, state, fn, timings)
            await self.finish(rid, out, state, fn, stats, timings, path)
        except (Exception, SystemExit) as error:
            # The path counts too when it failed: the request reached the model's library.
            self.fail(rid, error, path)
        finally:
            CURRENT_REQUEST.reset(token)

    async def post(self, msg, blobs):
        rid = msg["id"]
        parked = self.parked.pop(rid, None)
        if parked is None:
            self.send({"op": "error", "id": rid, "class": "<class 'RuntimeError'>", "message": "unknown request", "invalid": False})
            return
        state, fn, stats, timings = parked
        token = CURRENT_REQUEST.set(rid)
        try:
            out = protocol.decode(msg.get("outputs"), blobs)
            # The model's explanation, when the request asked for one (?explain=true).
            if msg.get("contributions") is not None:
                state["contributions"] = protocol.decode(msg["contributions"], blobs)
            await self.finish(rid, out, state, fn, stats, timings, "native")
        except (Exception, SystemExit) as error:
            self.fail(rid, error)
        finally:
            CURRENT_REQUEST.reset(token)

    async def finish(self, rid, out, state, fn, stats, timings, path):
        result = await self.stage("postprocess", out, state, fn, timings)
        value = protocol.to_json(result, "postprocess" if callable(getattr(self.instance, "postprocess", None)) else "the model")
        reply = {"op": "result", "id": rid, "value": value, "timings": timings, "path": path}
        if stats:
            try:
                reply["stats"] = protocol.to_json(stats, "collect_custom_statistics_fn")
            except TypeError as error:
                log("statistics dropped: %s" % error)
        self.send(reply)

    def fail(self, rid, error, path="python"):
        log("request failed: %s" % "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip())
        self.send({
            "op": "error",
            "id": rid,
            "class": _class_text(error),
            "message": str(error),
            "invalid": isinstance(error, ValueError),
            "path": path,
        })

    # ---- main loop

    def spawn(self, coroutine, rid=None):
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if rid is not None:
            # A request the server gave up on (its client went away) is cancelled by id.
            self.running[rid] = task
            task.add_done_callback(lambda _, rid=rid: self.running.pop(rid, None))

    def next_frame(self):
        while not self.backlog:
            with self.read_lock:
                if not self.backlog and not self.pump():
                    return None
        return self.backlog.popleft()

    def serve_sync(self):
        """One request at a time on the main thread: no event loop, no reader thread."""
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            header, blobs = frame
            op = header.get("op")
            if op == "infer":
                drive(self.infer(header, blobs))
            elif op == "post":
                drive(self.post(header, blobs))
            elif op == "drop":
                self.parked.pop(header.get("id"), None)
            elif op == "exit":
                return

    async def serve_async(self):
        """custom_async: requests run as tasks on an event loop; a reader thread feeds it."""
        self.loop = asyncio.get_running_loop()
        self.inbox = asyncio.Queue()
        for frame in self.backlog:
            self.inbox.put_nowait(frame)
        self.backlog.clear()
        threading.Thread(target=self.read_loop, name="serval-reader", daemon=True).start()
        while True:
            header, blobs = await self.inbox.get()
            op = header.get("op")
            if op == "infer":
                self.spawn(self.infer(header, blobs), header.get("id"))
            elif op == "post":
                self.spawn(self.post(header, blobs), header.get("id"))
            elif op == "cancel":
                task = self.running.get(header.get("id"))
                if task is not None:
                    task.cancel()
                self.parked.pop(header.get("id"), None)
            elif op == "drop":
                self.parked.pop(header.get("id"), None)
            elif op == "exit":
                return

    def serve(self):
        frame = self.next_frame()
        if frame is None or frame[0].get("op") != "load":
            return
        if frame[0].get("engine") == "custom_async":
            self.concurrent = True
            asyncio.run(self._load_then_serve(frame[0]))
        else:
            drive(self.load(frame[0]))
            self.serve_sync()

    async def _load_then_serve(self, header):
        await self.load(header)
        await self.serve_async()


def run():
    # `from clearml import StorageManager` in clearml's examples works without clearml installed;
    # at the end of the path, so a real clearml wins.
    sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat"))
    Worker(_open_channel()).serve()
