"""The REST API of TensorFlow Serving (v1), on aiohttp.

Routing follows `http_rest_api_handler.cc` / `http_rest_api_util.cc` to the
letter: the same two regular expressions (case-insensitive, `/versions/N` or
`/labels/L`), matched against the path *with* its query string as TF Serving's
HTTP server hands it over (`evhttp_request.cc`), the same "Malformed request:
METHOD PATH" for anything else under `/v1/`, URL-decoded model names and labels,
`OPTIONS` answered as a CORS preflight (`http_server.cc`), errors as
`{"error": "..."}` with TF Serving's status codes and its exact
`Content-Type: application/json`. Paths outside `/v1/` (other than the metrics
path) get a JSON 404; methods TF Serving's HTTP server does not accept get a JSON
501. Errors that aiohttp raises before a handler runs (malformed HTTP) are turned
into the same JSON errors by :meth:`RestApi.http_error_response`, which the HTTP
layer (`server.py`) calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import Executor
from typing import Any
from urllib.parse import unquote

import numpy as np
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from kflow.serve.config import ServerOptions
from kflow.serve.json_tensor import (
    error_json,
    make_json_from_classification,
    make_json_from_regression,
    make_json_from_tensors,
    parse_examples,
    parse_json,
    parse_predict_inputs,
    signature_name_of,
)
from kflow.serve.manager import Lease, ModelManager
from kflow.serve.metrics import CONTENT_TYPE, ServingMetrics
from kflow.serve.signature import DEFAULT_SIGNATURE, dtype_string
from kflow.serve.status import Code, ServingError

__all__ = ["RestApi", "PREDICTION_API_RE", "MODEL_STATUS_API_RE"]

log = logging.getLogger("kflow.serve")
access_log = logging.getLogger("kflow.serve.access")

PREDICTION_API_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE)
MODEL_STATUS_API_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE)
V1_RE = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)

_BIG_BODY = 256 * 1024  # parse bodies above this size off the event loop
MAX_CONCURRENT_BIG_BODIES = 4  # requests with larger (or chunked) bodies handled at once
_TRIM_AFTER_BYTES = 4 * 1024 * 1024  # give memory back to the OS after bodies this large


def _find_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _find_malloc_trim()
_timeout_cm = getattr(asyncio, "timeout", None)  # Python 3.11+: no extra task per request
_JSON_HEADERS = {"Content-Type": "application/json"}  # exactly TF Serving's (AddHeaders)
# Methods TF Serving's HTTP server accepts (evhttp_server.cc, evhttp_set_allowed_methods);
# libevent answers any other method 501 Not Implemented before TF Serving sees it.
ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
# Metric label values for methods: a bounded set, whatever clients send.
_METHOD_LABELS = ALLOWED_METHODS | {"TRACE", "CONNECT"}
UNKNOWN_MODEL_LABEL = "(unknown)"  # metrics label for names that are not a configured model
_ORIGIN_RE = re.compile(r"https?://")
_METADATA_CACHE_SIZE = 64
_MAX_LOGGED = 1000  # characters of a path or model name written to the access log


def json_response(text: str | bytes, status: int = 200) -> web.Response:
    """A response with TF Serving's `Content-Type: application/json` (no charset)."""
    body = text.encode("utf-8") if isinstance(text, str) else text
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def _decode(raw: str, what: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ServingError.invalid_argument(f"Failed to decode {what}:{raw}") from None


def _malformed(method: str, path: str) -> ServingError:
    return ServingError.invalid_argument(f"Malformed request: {method} {path}")


def _dt_name(dtype: int) -> str:
    return "DT_" + dtype_string(dtype).upper()


class _Ctx:
    """What the access log and metrics record about one request."""

    __slots__ = ("model", "version", "api", "error", "bytes_in", "close")

    def __init__(self):
        self.model = self.version = self.api = self.error = None
        self.bytes_in = 0
        self.close = False  # close the connection after answering


class RestApi:
    """Request handlers of one server.

    Args:
        manager: The :class:`ModelManager`.
        options: :class:`ServerOptions` (body limit, timeout, metrics path).
        metrics: :class:`ServingMetrics`.
        parse_executor: Threads for parsing and writing large bodies.
    """

    def __init__(self, manager: ModelManager, options: ServerOptions, metrics: ServingMetrics,
                 parse_executor: Executor):
        self.manager = manager
        self.options = options
        self.metrics = metrics
        self._parse_executor = parse_executor
        self._timeout = options.request_timeout_ms / 1000.0
        self._metadata_cache: dict[tuple[str, int, float], str] = {}
        self._big_requests = asyncio.Semaphore(MAX_CONCURRENT_BIG_BODIES)
        self._trimmed_at = 0.0

    def make_request(self, message, payload, protocol, writer, task) -> web.BaseRequest:
        """The request factory of the HTTP layer: requests whose body may be read
        up to `max_body_bytes` (after decoding any Content-Encoding)."""
        return web.BaseRequest(message, payload, protocol, writer, task,
                               asyncio.get_running_loop(),
                               client_max_size=self.options.max_body_bytes)

    # ------------------------------------------------------------------ entry point

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answers one request; every failure becomes a JSON error response."""
        started = time.perf_counter()
        ctx = _Ctx()
        method = request.method
        # The path as TF Serving matches it: raw (not URL-decoded), with the query.
        path = request.raw_path
        try:
            if method not in ALLOWED_METHODS:
                raise ServingError(Code.UNIMPLEMENTED,
                                   f"Method not implemented: {method[:32]}")
            if self.options.metrics_path and request.rel_url.raw_path == self.options.metrics_path:
                response = self._metrics_response(method, path)
            elif V1_RE.fullmatch(path):
                if method == "OPTIONS":
                    response = self._preflight(request)
                elif _timeout_cm is not None:
                    async with _timeout_cm(self._timeout):
                        response = await self._v1(request, method, path, ctx)
                else:  # Python 3.10
                    response = await asyncio.wait_for(self._v1(request, method, path, ctx),
                                                      self._timeout)
            else:
                raise ServingError(Code.NOT_FOUND, f"Not found: {method} {path}. The REST API "
                                   "is under /v1/models/ (TensorFlow Serving's v1 API).")
        except ServingError as exc:
            response = self._error(exc, ctx)
        except asyncio.TimeoutError:
            response = self._error(ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"), ctx)
        except web.HTTPRequestEntityTooLarge:
            response = self._error(self._too_large(request), ctx)
        except ConnectionError:  # the client went away mid-request: nobody reads the answer
            response = self._error(ServingError(Code.CANCELLED, "Client closed the connection"),
                                   ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: answer 500, log the traceback
            log.exception("Unexpected error for %s %s", method, path[:_MAX_LOGGED])
            response = self._error(ServingError(Code.INTERNAL, f"Internal error: "
                                                f"{type(exc).__name__}: {exc}"), ctx)
        if ctx.close:
            response.force_close()
        self._record(request, response, ctx, time.perf_counter() - started)
        return response

    def http_error_response(self, request: web.BaseRequest, status: int,
                            exc: BaseException | None = None,
                            message: str | None = None) -> web.Response:
        """The JSON answer to an error the HTTP layer found before :meth:`handle`
        ran (a malformed request line, header or chunk, an unsupported
        Content-Encoding...), with its one access-log line.

        Args:
            request: aiohttp's placeholder request for the broken message.
            status: The status aiohttp chose (400 for malformed HTTP).
            exc: aiohttp's exception, if any.
            message: aiohttp's description of the error, if any.

        Returns:
            A `{"error": ...}` response.
        """
        ctx = _Ctx()
        if isinstance(exc, HttpProcessingError) or (exc is None and message):
            text = str(message or getattr(exc, "message", "") or type(exc).__name__)
            # aiohttp adds the offending line and a caret on further lines: keep the
            # first line, which names the problem.
            text = text.strip().splitlines()[0].rstrip(":") if text.strip() else "bad request"
            error = ServingError(Code.INVALID_ARGUMENT,
                                 f"Malformed HTTP request: {text[:200]}",
                                 http_status=status if 400 <= status < 500 else 400)
        elif status == 504:
            error = ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        else:  # an exception escaped handle(): a bug, worth its traceback
            log.error("Unexpected error in the HTTP layer", exc_info=exc)
            error = ServingError(Code.INTERNAL, "Internal error", http_status=status)
        response = self._error(error, ctx)
        self._record(request, response, ctx, 0.0, malformed=True)
        return response

    def _error(self, exc: ServingError, ctx: _Ctx) -> web.Response:
        ctx.error = exc
        return json_response(error_json(exc.message), exc.http_status)

    def _too_large(self, request: web.BaseRequest) -> ServingError:
        limit = self.options.max_body_bytes
        encoding = request.headers.get("Content-Encoding", "").strip()
        if encoding and encoding.lower() != "identity":
            message = (f"Request body is larger than the limit of {limit} bytes "
                       f"(--max-body-bytes) once decoded: the limit applies to the body "
                       f"after its Content-Encoding ({encoding[:32]}) is undone.")
        else:
            size = request.content_length
            got = f"of {size} bytes " if size is not None else ""
            message = (f"Request body {got}is larger than the limit of {limit} bytes "
                       "(--max-body-bytes).")
        return ServingError(Code.RESOURCE_EXHAUSTED, message, http_status=413)

    def _metrics_response(self, method: str, path: str) -> web.Response:
        if method not in ("GET", "HEAD"):
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Malformed request: {method} {self.options.metrics_path}",
                               http_status=405)
        if path != self.options.metrics_path:  # a query string (http_server.cc)
            raise ServingError.invalid_argument(
                f"Unexpected path: {path}. Should be {self.options.metrics_path}")
        return web.Response(body=self.metrics.render().encode(),
                            headers={"Content-Type": CONTENT_TYPE})

    def _preflight(self, request: web.BaseRequest) -> web.Response:
        """`OPTIONS` under `/v1/`, as TF Serving's `RestApiRequestDispatcher`: 200
        with an empty body when an `Origin` header names an http(s) origin, else
        400 (kflow writes the error as JSON; TF Serving sends no body)."""
        if _ORIGIN_RE.search(request.headers.get("Origin", "")):
            return web.Response(status=200)
        raise ServingError.failed_precondition("Origin header is missing in CORS preflight")

    # ------------------------------------------------------------------ routing

    async def _v1(self, request: web.BaseRequest, method: str, path: str, ctx: _Ctx
                  ) -> web.Response:
        match = None
        if method == "POST":
            match = PREDICTION_API_RE.fullmatch(path)
        elif method == "GET":
            match = MODEL_STATUS_API_RE.fullmatch(path)
        if match is None:
            raise _malformed(method, path)
        raw_name, version_str, raw_label = match.group(1), match.group(2), match.group(3)
        name = _decode(raw_name, "model name") if raw_name else ""
        label = _decode(raw_label, "model version label") if raw_label else None
        version = None
        if version_str:
            version = int(version_str)
            if version >= 1 << 63:
                raise ServingError.invalid_argument(
                    f"Failed to convert version: {version_str} to numeric.")
        ctx.model = name or None
        if method == "POST":
            api = match.group(4)
            if api not in ("predict", "classify", "regress"):
                raise _malformed(method, path)
            ctx.api = api
            size = request.content_length
            if size is not None and size <= _BIG_BODY:
                return await self._post(request, api, name, version, label, ctx)
            # Large (or chunked) bodies: a few at a time, so memory stays bounded
            # however many clients send them at once.
            try:
                async with self._big_requests:
                    return await self._post(request, api, name, version, label, ctx)
            finally:
                if ctx.bytes_in > _TRIM_AFTER_BYTES:
                    self._trim_memory()
        if match.group(4) == "metadata":
            ctx.api = "GetModelMetadata"
            return self._metadata(name, version, label, ctx)
        ctx.api = "GetModelStatus"
        return self._status(name, version, label, ctx)

    def _trim_memory(self) -> None:
        """Hands memory freed by a large request back to the OS (glibc keeps it
        in per-thread arenas otherwise, and the process only grows), at most
        once a second, off the event loop."""
        now = time.monotonic()
        if _malloc_trim is None or now - self._trimmed_at < 1.0:
            return
        self._trimmed_at = now
        self._parse_executor.submit(_malloc_trim, 0)

    async def _post(self, request: web.BaseRequest, api: str, name: str, version: int | None,
                    label: str | None, ctx: _Ctx) -> web.Response:
        body = await self._read_body(request, ctx)
        if api == "predict":
            return await self._predict(body, name, version, label, ctx)
        return await self._classify_regress(api, body, name, version, label, ctx)

    async def _read_body(self, request: web.BaseRequest, ctx: _Ctx) -> bytes:
        size = request.content_length
        if size is not None and size > self.options.max_body_bytes:
            raise self._too_large(request)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(request) from None
        except (web.RequestPayloadError, HttpProcessingError) as exc:
            # A body that does not decode (bad gzip, a bad chunk size...): the
            # client's mistake, so 400, never 500.
            ctx.close = True  # the parser's place in the stream is lost
            cause = exc.__cause__ or exc
            detail = getattr(cause, "message", None) or str(cause) or type(cause).__name__
            encoding = request.headers.get("Content-Encoding", "").strip()
            what = f" (Content-Encoding: {encoding[:32]})" if encoding else ""
            raise ServingError.invalid_argument(
                f"Could not read the request body{what}: {str(detail)[:200]}") from None
        ctx.bytes_in = len(body)
        return body

    async def _offload(self, size: int, fn, *args):
        if size < _BIG_BODY:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._parse_executor, fn, *args)

    # ------------------------------------------------------------------ model APIs

    async def _run(self, lease: Lease, signature: str, feeds: dict[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
        if lease.batcher is not None:
            return await lease.batcher.submit(signature, feeds)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.manager.executor, lease.servable.run,
                                          signature, feeds)

    async def _predict(self, body: bytes, name: str, version: int | None, label: str | None,
                       ctx: _Ctx) -> web.Response:
        doc = await self._offload(len(body), parse_json, body)
        signature_name = signature_name_of(doc)
        with self.manager.lease(name, version, label) as lease:
            ctx.version = lease.version
            sig = lease.servable.signature(signature_name)
            may_have_bool = b"true" in body or b"false" in body
            fmt, feeds = await self._offload(
                len(body), lambda: parse_predict_inputs(doc, sig.inputs, signature_name,
                                                        may_have_bool=may_have_bool))
            lease.servable.check_feeds(sig, feeds)
            outputs = await self._run(lease, signature_name or DEFAULT_SIGNATURE, feeds)
        size = sum(o.size for o in outputs.values()) * 8
        text = await self._offload(size, make_json_from_tensors, outputs, fmt)
        return json_response(text)

    async def _classify_regress(self, api: str, body: bytes, name: str, version: int | None,
                                label: str | None, ctx: _Ctx) -> web.Response:
        doc = await self._offload(len(body), parse_json, body)
        signature_name = signature_name_of(doc)
        examples = await self._offload(len(body), parse_examples, doc)
        with self.manager.lease(name, version, label) as lease:
            ctx.version = lease.version
            sig = lease.servable.classify_regress_signature(signature_name, api)
            feeds = {"inputs": np.asarray(examples, dtype=object).reshape(-1)}
            lease.servable.check_feeds(sig, feeds)
            outputs = await self._run(lease, sig.name, feeds)
        n = len(examples)
        if api == "classify":
            return json_response(_classification_json(sig, outputs, n))
        return json_response(_regression_json(sig, outputs, n))

    def _status(self, name: str, version: int | None, label: str | None, ctx: _Ctx
                ) -> web.Response:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        if not name:
            raise ServingError.invalid_argument("Missing model name in request.")
        response = get_model_status_pb2.GetModelStatusResponse()
        for vs in self.manager.version_states(name, version, label):
            entry = response.model_version_status.add()
            entry.version = vs.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(vs.state)
            entry.status.SetInParent()
            if vs.error is not None:
                entry.status.error_code = int(vs.error.code)
                entry.status.error_message = vs.error.message
        text = json_format.MessageToJson(response, indent=1,
                                         always_print_fields_with_no_presence=True)
        return json_response(text)

    def _metadata(self, name: str, version: int | None, label: str | None, ctx: _Ctx
                  ) -> web.Response:
        if not name:
            raise ServingError.invalid_argument("Missing model name in request.")
        with self.manager.lease(name, version, label) as lease:
            ctx.version = lease.version
            key = (name, lease.version, lease.servable.loaded_at)
            text = self._metadata_cache.get(key)
            if text is None:
                text = _metadata_json(name, lease.version, lease.servable.meta_graph)
                if len(self._metadata_cache) >= _METADATA_CACHE_SIZE:
                    self._metadata_cache.clear()  # versions come and go: stay bounded
                self._metadata_cache[key] = text
        return json_response(text)

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, request: web.BaseRequest, response: web.StreamResponse, ctx: _Ctx,
                seconds: float, malformed: bool = False) -> None:
        """Metrics and the access-log line of one request. Metric labels come from
        bounded sets (configured models, known methods and APIs), whatever
        clients send."""
        status = response.status
        method = "-" if malformed else request.method
        self.metrics.http.inc(method if method in _METHOD_LABELS or malformed else "OTHER",
                              str(status))
        if ctx.api is not None and ctx.model:
            model = ctx.model if self.manager.is_configured(ctx.model) else UNKNOWN_MODEL_LABEL
            code = ctx.error.code.name if ctx.error is not None else "OK"
            version = str(ctx.version) if ctx.version is not None else ""
            self.metrics.tfs_request_count.inc(model, code)
            self.metrics.tfs_request_latency.observe(seconds * 1e6, model, ctx.api, "REST")
            self.metrics.requests.inc(model, version, ctx.api, str(status))
            self.metrics.latency.observe(seconds, model, version, ctx.api)
        if access_log.isEnabledFor(logging.INFO):
            entry: dict[str, Any] = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                "remote": request.remote,
                "method": None if malformed else request.method[:32],
                "path": None if malformed else request.raw_path[:_MAX_LOGGED],
                "status": status, "ms": round(seconds * 1000, 3), "bytes_in": ctx.bytes_in,
                "bytes_out": len(body) if isinstance(body := getattr(response, "body", None),
                                                     (bytes, bytearray)) else None,
            }
            if ctx.model:
                entry["model"] = ctx.model[:_MAX_LOGGED]
            if ctx.version is not None:
                entry["version"] = ctx.version
            if ctx.api:
                entry["api"] = ctx.api
            if ctx.error is not None:
                entry["error"] = ctx.error.message[:300]
            request_id = None if malformed else request.headers.get("X-Request-Id")
            if request_id:
                entry["request_id"] = request_id[:128]
            access_log.info(json.dumps(entry))


def _classification_json(sig, outputs: dict[str, np.ndarray], n: int) -> str:
    """PostProcessClassificationResult + MakeJsonFromClassificationResult."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is not None:
        if classes.ndim != 2:
            raise ServingError.invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got "
                f"{list(classes.shape)}")
        if sig.outputs["classes"].dtype != 7:
            raise ServingError.invalid_argument(
                "Expected classes Tensor of DT_STRING. Got: "
                f"{_dt_name(sig.outputs['classes'].dtype)}")
        if classes.shape[0] != n:
            raise ServingError.invalid_argument(
                f"Expected classes output batch size of {n}. Got: {classes.shape[0]}")
    if scores is not None:
        if scores.ndim != 2:
            raise ServingError.invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(scores.shape)}")
        if sig.outputs["scores"].dtype != 1:
            raise ServingError.invalid_argument(
                "Expected scores Tensor of DT_FLOAT. Got: "
                f"{_dt_name(sig.outputs['scores'].dtype)}")
        if scores.shape[0] != n:
            raise ServingError.invalid_argument(
                f"Expected scores output batch size of {n}. Got: {scores.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise ServingError.invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
            f"{scores.shape[1]}")
    num = (classes if classes is not None else scores).shape[1]
    labels = ([[c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in row]
               for row in classes.tolist()] if classes is not None
              else [[""] * num for _ in range(n)])
    values = scores.tolist() if scores is not None else [[0.0] * num for _ in range(n)]
    return make_json_from_classification(labels, values)


def _regression_json(sig, outputs: dict[str, np.ndarray], n: int) -> str:
    """PostProcessRegressionResult + MakeJsonFromRegressionResult."""
    out = outputs["outputs"]
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise ServingError.invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got {list(out.shape)}")
    if sig.outputs["outputs"].dtype != 1:
        raise ServingError.invalid_argument(
            f"Expected output Tensor of DT_FLOAT. Got: {_dt_name(sig.outputs['outputs'].dtype)}")
    if out.shape[0] != n:
        raise ServingError.invalid_argument(
            f"Input batch size did not match output batch size: {n} vs. {out.shape[0]}")
    return make_json_from_regression(out.reshape(-1).tolist())


def _metadata_json(name: str, version: int, meta_graph) -> str:
    """GetModelMetadataResponse as TF Serving writes it (`ToJsonString`)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

    spec = model_pb2.ModelSpec(name=name)
    spec.version.value = version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta_graph.signature_def.items():
        sig_map.signature_def[key].CopyFrom(sig)
    kwargs = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    doc = {
        "model_spec": json_format.MessageToDict(spec, **kwargs),
        "metadata": {"signature_def": json_format.MessageToDict(sig_map, **kwargs)},
    }
    return json.dumps(doc, indent=1)
