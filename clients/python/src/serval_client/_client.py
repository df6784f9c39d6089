"""The client: one HTTP call per operation, JSON in and out (the field names of ``serval
--json``), errors as ``ServalError``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

Json = Any
Shape = Union[Sequence[int], Sequence[Sequence[int]]]

_CHUNK = 1 << 20


class ServalError(Exception):
    """A refused or failed call: ``status`` is the HTTP status (0: the server was not reached),
    ``detail`` the server's message."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shapes(value: Optional[Shape]) -> List[List[int]]:
    """One shape (``[1, 4]``) or one per input (``[[1, 4], [1, 2]]``)."""
    if value is None:
        return []
    items = list(value)
    if items and all(isinstance(v, int) for v in items):
        return [[int(v) for v in items]]
    return [[int(d) for d in shape] for shape in items]


def _names(value: Union[None, str, Iterable[str]]) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _aux_config(
    aux_config: Optional[Mapping[str, Any]],
    max_batch_size: Optional[int],
    max_queue_delay_ms: Optional[float],
    max_queue_size: Optional[int],
) -> Optional[Dict[str, Any]]:
    """The engine configuration with the batching arguments written in as Triton's keys (as the
    CLI's ``--max-batch-size``, ``--max-queue-delay-ms`` and ``--max-queue-size`` do)."""
    if max_batch_size is None and max_queue_delay_ms is None and max_queue_size is None:
        return dict(aux_config) if aux_config is not None else None
    config: Dict[str, Any] = dict(aux_config or {})
    if max_batch_size is not None:
        config["max_batch_size"] = int(max_batch_size)
    section = dict(config.get("dynamic_batching") or {})
    if max_queue_delay_ms is not None:
        section["max_queue_delay_microseconds"] = round(float(max_queue_delay_ms) * 1000)
    if max_queue_size is not None:
        policy = dict(section.get("default_queue_policy") or {})
        policy["max_queue_size"] = int(max_queue_size)
        section["default_queue_policy"] = policy
    config["dynamic_batching"] = section
    return config


class Serval:
    """A serval server's admin API.

    ``url``: the server (``http://host:8080``); ``key``: an admin key; ``service``: the serving
    service's id (``None``: the only one, as the CLI picks it)."""

    def __init__(self, url: str, key: str, service: Optional[str] = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self._service = service
        self.endpoints = _Endpoints(self)
        self.models = _Models(self)
        self.metrics = _Metrics(self)
        self.keys = _Keys(self)

    # --- plumbing -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Optional[Json] = None,
        query: Optional[Sequence[tuple]] = None,
        data: Any = None,
        headers: Optional[Dict[str, str]] = None,
        api: bool = True,
    ) -> Json:
        url = self.url + ("/api/v1" if api else "") + path
        if query:
            url += "?" + urllib.parse.urlencode([(k, v) for k, v in query if v is not None])
        all_headers = {"Authorization": f"Bearer {self.key}"}
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                detail = json.loads(raw).get("detail", "")
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace")
            raise ServalError(error.code, str(detail) or error.reason) from None
        except urllib.error.URLError as error:
            raise ServalError(0, f"cannot reach the serval server at {self.url}: {error.reason}") from None
        return json.loads(text) if text else None

    def _write(self, method: str, path: str, body: Optional[Json] = None, **kwargs: Any) -> Json:
        """A write: returns what ``serval --json`` prints for it."""
        return self._request(method, path, body, **kwargs)["result"]

    def _upload(self, path: str, query: List[tuple], target: str) -> Json:
        """Streams a file (its sha256 sent along, checked by the server)."""
        size = os.path.getsize(path)
        query = query + [("sha256", _sha256(path))]
        with open(path, "rb") as f:
            return self._request(
                "POST",
                target,
                query=query,
                data=f,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )

    def _path(self, *segments: str) -> str:
        return "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)

    @property
    def service(self) -> str:
        """The service this client works on (resolved once when not given)."""
        if self._service is None:
            services = self.services()
            if len(services) != 1:
                names = ", ".join(f"{s['id']} ({s['name']})" for s in services) or "none"
                raise ServalError(
                    0, f"pass service=: the server's store has {len(services)} services ({names})"
                )
            self._service = services[0]["id"]
        return self._service

    def _svc(self, *segments: str) -> str:
        return self._path("services", self.service, *segments)

    def _code(self, preprocess: Optional[str]) -> Optional[Json]:
        """Stores preprocess code: a ``.py`` file, a ``.zip``, or a package folder (zipped)."""
        if preprocess is None:
            return None
        if os.path.isdir(preprocess):
            if not os.path.isfile(os.path.join(preprocess, "__init__.py")):
                raise ServalError(0, f"preprocess folder '{preprocess}' has no __init__.py")
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for root, _, files in os.walk(preprocess):
                    for name in sorted(files):
                        full = os.path.join(root, name)
                        archive.write(full, os.path.relpath(full, preprocess))
            data = buffer.getvalue()
            name = os.path.basename(os.path.normpath(preprocess)) + ".zip"
            return self._request(
                "POST",
                "/code",
                query=[("filename", name), ("sha256", hashlib.sha256(data).hexdigest())],
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        if not os.path.isfile(preprocess):
            raise ServalError(0, f"preprocess code '{preprocess}' could not be found")
        return self._upload(preprocess, [("filename", os.path.basename(preprocess))], "/code")

    # --- the CLI's verbs ------------------------------------------------------------------

    def services(self) -> List[Json]:
        """``serval list``."""
        return self._request("GET", "/services")

    def create_service(self, name: str, project: str = "DevOps", tags: Sequence[str] = ()) -> Json:
        """``serval create``."""
        return self._write("POST", "/services", {"name": name, "project": project, "tags": list(tags)})

    def config(self, **settings: Any) -> Json:
        """``serval config``: with no arguments the settings; else changes them
        (``metric_log_freq=``, ``base_serving_url=``, ``triton_grpc_server=``, ``python=``, ...)."""
        if not settings:
            return self._request("GET", self._svc("config"))
        if "base_serving_url" in settings:
            settings["serving_base_url"] = settings.pop("base_serving_url")
        return self._write("PATCH", self._svc("config"), settings)

    def canary(
        self,
        endpoint: str,
        weights: Sequence[float],
        input_endpoints: Optional[Sequence[str]] = None,
        input_endpoint_prefix: Optional[str] = None,
        sticky: Optional[str] = None,
    ) -> Json:
        """``serval model canary``: adds or replaces (new weights) the canary ``endpoint``;
        ``sticky="header:X-User-Id"`` (or ``query:NAME``, ``field:NAME``) keeps each key on one
        target."""
        body = {
            "weights": [float(w) for w in weights],
            "input_endpoints": list(input_endpoints or []),
            "input_endpoint_prefix": input_endpoint_prefix,
            "sticky": sticky,
        }
        return self._write("PUT", self._svc("canaries", endpoint), body)

    def shadow(
        self,
        endpoint: str,
        target: str,
        fraction: float = 1.0,
        tolerance: float = 1e-6,
    ) -> Json:
        """``serval model shadow``: copies ``fraction`` of ``endpoint``'s requests to ``target``
        after ``endpoint`` answered, and compares the answers."""
        body = {"endpoint": endpoint, "target": target, "fraction": float(fraction), "tolerance": float(tolerance)}
        return self._write("PUT", self._svc("shadows"), body)

    def remove_shadow(self, endpoint: str, target: Optional[str] = None) -> Json:
        """``serval model shadow remove``: every shadow of ``endpoint``, or only the one to ``target``."""
        return self._write("DELETE", self._svc("shadows"), query=[("endpoint", endpoint), ("target", target)])

    def shadow_report(self, endpoint: str, window: Optional[str] = None) -> List[Json]:
        """``serval model shadow report --json``: per target, how often it agreed with ``endpoint``
        over every server (``window="10m"``: only the last ten minutes)."""
        return self._request("GET", self._svc("shadows", "report"), query=[("endpoint", endpoint), ("window", window)])

    def payload_log(
        self,
        endpoint: str,
        destination: str,
        sample: float = 1.0,
        max_file_mb: int = 64,
        max_file_seconds: int = 300,
    ) -> Json:
        """``serval logging add``: every server writes ``sample`` of ``endpoint``'s requests
        (a url, its versions, or ``prefix*``) with their predictions as Parquet files under
        ``destination`` (``file:///folder``, ``s3://…``, ``gs://…``, ``azure://…``)."""
        body = {
            "endpoint": endpoint,
            "destination": destination,
            "sample": float(sample),
            "max_file_mb": int(max_file_mb),
            "max_file_seconds": int(max_file_seconds),
        }
        return self._write("PUT", self._svc("logging"), body)

    def payload_logs(self) -> List[Json]:
        """``serval logging list --json``: the service's payload logs."""
        return self._request("GET", self._svc("logging"))

    def remove_payload_log(self, endpoint: str) -> Json:
        """``serval logging remove``: stop logging ``endpoint`` (as it was added)."""
        return self._write("DELETE", self._svc("logging"), query=[("endpoint", endpoint)])

    def drift(self, endpoint: str, window: Optional[str] = None) -> Json:
        """``serval monitor drift --json``: each input feature's live window (summed over every
        server) against ``endpoint``'s drift reference: ``psi``, ``ks`` or ``chi_square``,
        ``status``, the bins' ``reference`` and ``live`` proportions."""
        return self._request("GET", self._svc("drift"), query=[("endpoint", endpoint), ("window", window)])

    def put_drift_reference(self, reference: Json) -> Json:
        """Stores a drift reference computed elsewhere: ``{"endpoint", "features": [{"name",
        "kind": "numeric", "edges", "proportions"} | {"name", "kind": "categorical",
        "categories", "proportions"}], "rows", "source", "window_seconds"}`` (``serval monitor
        reference`` computes one from a CSV or Parquet file)."""
        return self._write("PUT", self._svc("drift"), reference)

    def remove_drift_reference(self, endpoint: str) -> Json:
        """``serval monitor remove``: stop watching ``endpoint``'s drift."""
        return self._write("DELETE", self._svc("drift"), query=[("endpoint", endpoint)])

    def rollout(
        self,
        endpoint: str,
        from_: str,
        to: str,
        steps: Sequence[float] = (5, 25, 50, 100),
        interval: str = "60s",
        max_error_ratio: Optional[float] = None,
        max_p99_ms: Optional[float] = None,
        min_agreement: Optional[float] = None,
        shadow_first: Optional[str] = None,
        min_requests: int = 10,
    ) -> Json:
        """``serval model rollout``: moves canary ``endpoint``'s traffic from ``from_`` to ``to``
        step by step while the SLOs hold; returns the status."""
        body = {
            "from": from_,
            "to": to,
            "steps": [float(s) for s in steps],
            "interval": interval,
            "max_error_ratio": max_error_ratio,
            "max_p99_ms": max_p99_ms,
            "min_agreement": min_agreement,
            "shadow_first": shadow_first,
            "min_requests": min_requests,
        }
        return self._write("PUT", self._svc("rollouts", endpoint), body)

    def rollout_status(self, endpoint: str) -> Json:
        """``serval model rollout status --json``: state, step, weights, events."""
        return self._request("GET", self._svc("rollouts", endpoint))

    def rollout_pause(self, endpoint: str) -> Json:
        """``serval model rollout pause``."""
        return self._write("POST", self._svc("rollouts", endpoint, "pause"))

    def rollout_resume(self, endpoint: str) -> Json:
        """``serval model rollout resume``."""
        return self._write("POST", self._svc("rollouts", endpoint, "resume"))

    def rollout_abort(self, endpoint: str) -> Json:
        """``serval model rollout abort``: all traffic back to the old endpoint."""
        return self._write("POST", self._svc("rollouts", endpoint, "abort"))

    def auto_update(
        self,
        endpoint: str,
        engine: str,
        name: Optional[str] = None,
        name_regex: bool = False,
        project: Optional[str] = None,
        tags: Sequence[str] = (),
        published: bool = False,
        max_versions: int = 1,
        preprocess: Optional[str] = None,
        input_size: Optional[Shape] = None,
        input_type: Union[None, str, Sequence[str]] = None,
        input_name: Union[None, str, Sequence[str]] = None,
        output_size: Optional[Shape] = None,
        output_type: Union[None, str, Sequence[str]] = None,
        output_name: Union[None, str, Sequence[str]] = None,
        aux_config: Optional[Mapping[str, Any]] = None,
        max_batch_size: Optional[int] = None,
        max_queue_delay_ms: Optional[float] = None,
        max_queue_size: Optional[int] = None,
    ) -> Json:
        """``serval model auto-update``: serve the newest registry models matching ``name`` /
        ``project`` / ``tags`` as ``endpoint/<version>``."""
        body = {
            "engine": engine,
            "model_name": name,
            "name_regex": name_regex,
            "project": project,
            "tags": list(tags),
            "only_published": published,
            "max_versions": max_versions,
            "preprocess": self._code(preprocess),
            "io": _io(input_size, input_type, input_name, output_size, output_type, output_name),
            "aux_config": _aux_config(aux_config, max_batch_size, max_queue_delay_ms, max_queue_size),
        }
        return self._write("PUT", self._svc("auto-update", endpoint), body)

    def audit(self, since: Optional[str] = None, limit: int = 100) -> List[Json]:
        """``serval audit``: ``since`` a time ago (``"1h"``) or an RFC 3339 time."""
        return self._request("GET", "/audit", query=[("since", since), ("limit", limit)])

    def infer(self, endpoint: str, body: Json, version: Optional[str] = None, explain: bool = False) -> Json:
        """A request to clearml's route ``/serve/<endpoint>[/<version>]`` (the key must allow it).
        ``explain=True`` asks a tree model for its TreeSHAP contributions (``"contributions"`` in
        the reply)."""
        segments = ["serve", endpoint] + ([version] if version else [])
        query = [("explain", "true")] if explain else None
        return self._request("POST", self._path(*segments), body, query=query, api=False)


def _io(input_size, input_type, input_name, output_size, output_type, output_name) -> Dict[str, Any]:
    io_spec = {
        "input_size": _shapes(input_size),
        "input_type": _names(input_type),
        "input_name": _names(input_name),
        "output_size": _shapes(output_size),
        "output_type": _names(output_type),
        "output_name": _names(output_name),
    }
    return {k: v for k, v in io_spec.items() if v}


class _Endpoints:
    def __init__(self, client: Serval):
        self._c = client

    def add(
        self,
        engine: str,
        endpoint: str,
        version: Optional[str] = None,
        model_id: Optional[str] = None,
        preprocess: Optional[str] = None,
        name: Optional[str] = None,
        project: Optional[str] = None,
        tags: Sequence[str] = (),
        published: bool = False,
        input_size: Optional[Shape] = None,
        input_type: Union[None, str, Sequence[str]] = None,
        input_name: Union[None, str, Sequence[str]] = None,
        output_size: Optional[Shape] = None,
        output_type: Union[None, str, Sequence[str]] = None,
        output_name: Union[None, str, Sequence[str]] = None,
        aux_config: Optional[Mapping[str, Any]] = None,
        max_batch_size: Optional[int] = None,
        max_queue_delay_ms: Optional[float] = None,
        max_queue_size: Optional[int] = None,
    ) -> Json:
        """``serval model add``: adds or replaces ``endpoint`` (``version``: ``endpoint/version``).
        The model is ``model_id``, or the newest registry model matching ``name`` / ``project``
        / ``tags`` (``published``: published only); ``preprocess`` is a local file or folder."""
        body = {
            "engine": engine,
            "version": version,
            "model_id": model_id,
            "model_name": name,
            "project": project,
            "tags": list(tags),
            "only_published": published,
            "preprocess": self._c._code(preprocess),
            "io": _io(input_size, input_type, input_name, output_size, output_type, output_name),
            "aux_config": _aux_config(aux_config, max_batch_size, max_queue_delay_ms, max_queue_size),
        }
        return self._c._write("PUT", self._c._svc("endpoints", endpoint), body)

    def remove(self, endpoint: str) -> Json:
        """``serval model remove``: the endpoint, auto-update rule or canary ``endpoint``."""
        segments = endpoint.strip("/").split("/")
        return self._c._write("DELETE", self._c._svc("endpoints", *segments))

    def list(self) -> List[Json]:
        """The static endpoints (as ``serval --json model list`` shows them)."""
        return self._c._request("GET", self._c._svc("endpoints"))


class _Models:
    def __init__(self, client: Serval):
        self._c = client

    def upload(
        self,
        path: str,
        name: str,
        project: Optional[str] = None,
        tags: Sequence[str] = (),
        framework: Optional[str] = None,
        publish: bool = False,
    ) -> str:
        """``serval model upload --path``: streams the file to the server's storage (its sha256
        checked there) and registers it; returns the model id."""
        if not os.path.isfile(path):
            raise ServalError(0, f"--path='{path}' could not be found")
        query = [("name", name), ("filename", os.path.basename(path)), ("project", project)]
        query += [("tags", t) for t in tags]
        query += [("framework", framework), ("publish", "true" if publish else None)]
        return self._c._upload(path, query, "/models/upload")["result"]["id"]

    def register(
        self,
        url: str,
        name: str,
        project: Optional[str] = None,
        tags: Sequence[str] = (),
        framework: Optional[str] = None,
        publish: bool = False,
    ) -> str:
        """``serval model upload --url``: registers a file already in storage; returns the id."""
        body = {
            "name": name,
            "uri": url,
            "project": project,
            "tags": list(tags),
            "framework": framework,
            "publish": publish,
        }
        return self._c._write("POST", "/models", body)["id"]

    def list(
        self,
        name: Optional[str] = None,
        project: Optional[str] = None,
        tags: Sequence[str] = (),
        published: bool = False,
    ) -> List[Json]:
        """``serval model registry``: newest first."""
        query = [("name", name), ("project", project), ("published", "true" if published else None)]
        query += [("tags", t) for t in tags]
        return self._c._request("GET", "/models", query=query)

    def get(self, model_id: str) -> Json:
        """``serval model info``."""
        return self._c._request("GET", self._c._path("models", model_id))

    def publish(self, model_id: str) -> Json:
        """``serval model publish``."""
        return self._c._write("POST", self._c._path("models", model_id, "publish"))

    def tag(self, model_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> Json:
        """``serval model tag``."""
        body = {"add": list(add), "remove": list(remove)}
        return self._c._write("POST", self._c._path("models", model_id, "tags"), body)


class _Metrics:
    def __init__(self, client: Serval):
        self._c = client

    def add(
        self,
        endpoint: str,
        log_freq: Optional[float] = None,
        variable_scalar: Sequence[str] = (),
        variable_enum: Sequence[str] = (),
        variable_value: Sequence[str] = (),
        variable_counter: Sequence[str] = (),
    ) -> Json:
        """``serval metrics add``: variables as the CLI writes them (``"x=0,1,5"`` or
        ``"x=0/10/5"`` for scalars, ``"label=a,b"`` for enums, names for values and counters)."""
        variables: Dict[str, Any] = {}
        for raw in variable_scalar:
            name, buckets = _split(raw)
            variables[name] = {"type": "scalar", "buckets": _scalar_buckets(buckets)}
        for raw in variable_enum:
            name, buckets = _split(raw)
            variables[name] = {"type": "enum", "buckets": [b.strip() for b in buckets.split(",")]}
        for name in variable_value:
            variables[name.strip()] = {"type": "value"}
        for name in variable_counter:
            variables[name.strip()] = {"type": "counter"}
        body = {"log_frequency": log_freq, "variables": variables}
        segments = endpoint.strip("/").split("/")
        return self._c._write("POST", self._c._svc("metrics", *segments), body)

    def remove(self, endpoint: str, variable: Sequence[str] = ()) -> Json:
        """``serval metrics remove``: the rule, or only some of its variables."""
        segments = endpoint.strip("/").split("/")
        query = [("variable", v) for v in variable]
        return self._c._write("DELETE", self._c._svc("metrics", *segments), query=query)

    def list(self) -> List[Json]:
        """The metric rules."""
        return self._c._request("GET", self._c._svc("metrics"))


def _split(raw: str) -> tuple:
    name, sep, buckets = raw.partition("=")
    if not sep or not name.strip():
        raise ServalError(0, f"Variable '{raw}' should be in the form of <name>=<buckets>")
    return name.strip(), buckets


def _scalar_buckets(text: str) -> List[float]:
    """``0,1,5`` or ``min/max/count`` (count equal buckets: count + 1 bounds)."""
    if "/" in text:
        low, high, count = text.split("/")
        low_f, high_f, n = float(low), float(high), int(count)
        if n < 1:
            raise ServalError(0, f"scalar buckets '{text}': the count must be at least 1")
        return [low_f + (high_f - low_f) * i / n for i in range(n + 1)]
    return [float(b) for b in text.split(",")]


class _Keys:
    def __init__(self, client: Serval):
        self._c = client

    def create(
        self,
        name: str,
        role: str = "infer",
        endpoints: Optional[str] = None,
        expires: Optional[str] = None,
    ) -> str:
        """``serval auth create-key``: returns the key (shown only now)."""
        body = {"name": name, "role": role, "endpoints": endpoints, "expires": expires}
        return self._c._write("POST", self._c._svc("keys"), body)["key"]

    def list(self) -> List[Json]:
        """``serval auth list``."""
        return self._c._request("GET", self._c._svc("keys"))

    def revoke(self, name: str) -> Json:
        """``serval auth revoke``."""
        return self._c._write("DELETE", self._c._svc("keys", name))
