"""The server: aiohttp + the model manager, started, run and stopped gracefully.

This is the HTTP layer. It runs aiohttp's low-level server (no router: every
request, whatever its path, reaches :meth:`RestApi.handle`) with a connection
handler whose `handle_error` hook answers what aiohttp rejects before any
handler runs (malformed request lines, headers, chunk sizes, unsupported
Content-Encodings...) with the REST layer's JSON error and one access-log line,
instead of aiohttp's `text/plain` answer and logged traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kflow.gc_policy import tuned_gc
from kflow.serve.config import ServerOptions
from kflow.serve.manager import ModelManager
from kflow.serve.metrics import ServingMetrics
from kflow.serve.rest import RestApi
from kflow.training.strategy import configure_tensorflow_threads

KEEPALIVE_TIMEOUT_S = 75.0  # idle keep-alive connections are closed after this
# How long a thread may hold the GIL while another waits for it (CPython: 5 ms).
# The event-loop thread gives the GIL up at every socket call and then waits for
# it behind the model threads (the convoy effect); at 0.2 ms it gets it back
# sooner. bench_serving at 32 clients on digits-cnn, 6 interleaved rounds:
# median 2,676 req/s at 5 ms, 2,997 at 0.2 ms, 3,015 at 0.05 ms.
GIL_SWITCH_INTERVAL_S = 0.0002

__all__ = ["ModelServer", "ServerThread", "serve", "run_server", "configure_logging"]

log = logging.getLogger("kflow.serve")


def _make_web_server(api: RestApi, **handler_kwargs: Any):
    """aiohttp's low-level `web.Server` for `api`, with JSON errors for what the
    HTTP parser rejects (see the module docstring)."""
    from aiohttp import web
    from aiohttp.http_exceptions import HttpProcessingError
    from aiohttp.web_protocol import RequestHandler, RequestPayloadError

    class JsonErrorRequestHandler(RequestHandler):
        """aiohttp's connection handler; errors become `{"error": ...}` JSON."""

        __slots__ = ()

        def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            if request.writer.output_size > 0:  # as aiohttp: too late for an answer
                raise ConnectionError("Response is sent already, cannot send another "
                                      "response with the error message")
            response = api.http_error_response(request, status, exc, message)
            response.force_close()
            return response

        def log_exception(self, *args: Any, **kwargs: Any) -> None:
            # A body that failed to decode re-raises when aiohttp drains it after
            # the answer: the client's mistake, already answered and logged once.
            if isinstance(kwargs.get("exc_info"), (RequestPayloadError, HttpProcessingError)):
                return
            super().log_exception(*args, **kwargs)

    class JsonErrorServer(web.Server):
        """`web.Server` whose connections use :class:`JsonErrorRequestHandler`."""

        def __call__(self) -> RequestHandler:
            return JsonErrorRequestHandler(self, loop=asyncio.get_running_loop(),
                                           **handler_kwargs)

    return JsonErrorServer(api.handle, request_factory=api.make_request)


class ModelServer:
    """A TF Serving-compatible REST server over a model base.

    Args:
        base: The model base (`BASE/NAME/VERSION/`), one model's directory, or
            `None` when `options.model_config_file` lists every model.
        options: :class:`ServerOptions`. Defaults to `ServerOptions()`.

    Example:

    ```python
    server = ModelServer("exports", ServerOptions(port=0))
    await server.start()
    print(server.url)          # http://127.0.0.1:PORT
    await server.stop()        # finishes in-flight requests first
    ```
    """

    def __init__(self, base: str | Path | None, options: ServerOptions | None = None):
        self.base = base
        self.options = (options or ServerOptions()).validate()
        self.metrics = ServingMetrics()
        self.manager: ModelManager | None = None
        self._runner: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._parse_executor: ThreadPoolExecutor | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = self.options.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Loads the models (initial versions are available when this returns)
        and starts listening."""
        from aiohttp import web

        workers = max(4, os.cpu_count() or 1, self.options.batching.num_batch_threads + 2)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kflow-model")
        self._parse_executor = ThreadPoolExecutor(2, thread_name_prefix="kflow-parse")
        self.manager = ModelManager(
            self.base, self.options, self._executor,
            on_batch=lambda m, v, rows: self.metrics.batch_size.observe(rows, m, str(v)),
            on_load=lambda m, ok: self.metrics.load_attempts.inc(m, "ok" if ok else "error"))
        self.metrics.add_gauge(
            "kflow_serve_queued_rows", "Rows waiting in the batching queue.",
            ("model", "version"), self.manager.queued_rows)
        self.metrics.add_gauge(
            "kflow_serve_model_version_state", "1 for the state each model version is in.",
            ("model", "version", "state"), self._version_states)
        await self.manager.start()
        api = RestApi(self.manager, self.options, self.metrics, self._parse_executor)
        web_server = _make_web_server(api, access_log=None,
                                      keepalive_timeout=KEEPALIVE_TIMEOUT_S)
        self._runner = web.ServerRunner(web_server, handle_signals=False,
                                        shutdown_timeout=self.options.shutdown_grace_seconds)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def _version_states(self) -> dict[tuple[str, str, str], float]:
        out = {}
        for name, versions in self.manager.snapshot().items():
            for version, vs in versions.items():
                out[(name, str(version), vs.state)] = 1.0
        return out

    async def stop(self) -> None:
        """Stops accepting connections, lets in-flight requests finish (up to
        `shutdown_grace_seconds`), then unloads the models."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            await self._cleanup()

    async def _cleanup(self) -> None:
        await self.manager.stop()
        self._executor.shutdown(wait=False)
        self._parse_executor.shutdown(wait=False)


async def serve(base: str | Path | None, options: ServerOptions | None = None,
                on_ready: Callable[[ModelServer], None] | None = None) -> None:
    """Runs a server until SIGINT or SIGTERM, then shuts it down gracefully."""
    server = ModelServer(base, options)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / Windows
            pass
    if on_ready is not None:
        on_ready(server)
    await stop.wait()
    log.info("Shutting down: finishing in-flight requests (up to %gs).",
             server.options.shutdown_grace_seconds)
    await server.stop()
    log.info("Server stopped.")


def run_server(base: str | Path | None, options: ServerOptions | None = None,
               on_ready: Callable[[ModelServer], None] | None = None) -> int:
    """Blocking :func:`serve`; returns 0 after a graceful shutdown."""
    if options is not None:
        configure_tensorflow_threads(options.intra_op_threads, options.inter_op_threads)
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        with tuned_gc():  # this process is the server's: see kflow.gc_policy
            asyncio.run(serve(base, options, on_ready))
    finally:
        sys.setswitchinterval(previous_interval)
    return 0


class _JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def configure_logging(access_log: str | None = "-", level: int = logging.INFO) -> None:
    """Server log lines to stderr; the access log (one JSON object per request)
    to stderr ("-"), a file, or nowhere (`None`)."""
    server_log = logging.getLogger("kflow.serve")
    if not any(getattr(h, "_kflow", False) for h in server_log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s kflow serve: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        handler._kflow = True
        server_log.addHandler(handler)
    server_log.setLevel(level)
    access = logging.getLogger("kflow.serve.access")
    access.propagate = False
    for h in list(access.handlers):
        if getattr(h, "_kflow", False):
            access.removeHandler(h)
            h.close()
    if access_log is None:
        access.setLevel(logging.WARNING)
        return
    handler = (logging.StreamHandler(sys.stderr) if access_log == "-"
               else logging.FileHandler(access_log))
    handler.setFormatter(_JsonLineFormatter())
    handler._kflow = True
    access.addHandler(handler)
    access.setLevel(logging.INFO)


class ServerThread:
    """A :class:`ModelServer` on a background thread (tests, notebooks).

    Example:

    ```python
    with ServerThread("exports", ServerOptions(port=0)) as server:
        requests.post(f"{server.url}/v1/models/digits:predict", json=...)
    ```
    """

    def __init__(self, base: str | Path | None, options: ServerOptions | None = None):
        self.server = ModelServer(base, options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def manager(self) -> ModelManager:
        return self.server.manager

    def start(self, timeout: float = 120.0) -> ServerThread:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.server.start())
            except BaseException as exc:  # noqa: BLE001 - re-raised in start()
                self._error = exc
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=main, name="kflow-serve", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("The server did not start in time.")
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro, timeout: float | None = 120.0) -> Any:
        """Runs a coroutine on the server's event loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def refresh(self) -> None:
        """Polls the model base now (loads, swaps and unloads versions)."""
        self.call(self.server.manager.refresh())

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            self.call(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
