"""Reliability of `kflow serve` against hostile clients and unlucky operators
(issue 17, "Server"): every error a client can cause is a 4xx (or TF Serving's
501) with a `{"error": ...}` JSON body and exactly one log line; metric labels
stay bounded whatever names clients send; a broken newest version falls back to
the newest version that loads; the 413 of a compressed body quotes the limit;
the resolved path of every loaded version is logged.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import socket
import uuid

import pytest
import requests

from kflow.serve.config import ServerOptions
from kflow.serve.server import ServerThread
from kflow.serve.testing import shared_test_base, write_broken_version, write_scale_version

LIMIT = 4096
ROW = {"instances": [[1.0, 1.0, 1.0]]}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self._seen:  # the same record, propagated to a parent logger
            return
        self._seen.add(id(record))
        text = record.getMessage()
        if record.exc_info:
            text += "\nTraceback (most recent call last): ..."
        self.lines.append(text)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return shared_test_base(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(base):
    with ServerThread(base, ServerOptions(port=0, poll_seconds=0, max_body_bytes=LIMIT)) as srv:
        yield srv


@pytest.fixture
def logs():
    """Every line the server's loggers (kflow's and aiohttp's) write."""
    handler = _Lines()
    names = ("kflow.serve", "kflow.serve.access", "aiohttp", "asyncio")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if name != "asyncio" else logging.WARNING)
    yield handler.lines
    for name in names:
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(saved[name])


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def raw_http(url: str, data: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Sends raw bytes, returns (status, headers, body) of the one response."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:])}
                if len(body) >= int(headers.get("content-length", 1 << 30)):
                    return int(lines[0].split()[1]), headers, body
    raise AssertionError(f"no complete response, got {received[:300]!r}")


BODY = json.dumps(ROW).encode()


def post(path: str, body: bytes, headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body


# Requests aiohttp's HTTP layer rejects before any handler (issue 17's list).
HTTP_LAYER_CASES = {
    "bad header character": b"GET /v1/models/single HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "bad content-length": b"POST /v1/models/single:predict HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: abc\r\n\r\n",
    "two content-lengths": b"POST /v1/models/single:predict HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "bad chunk size": b"POST /v1/models/single:predict HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "space in path": b"GET /v1/models/sin gle HTTP/1.1\r\nHost: x\r\n\r\n",
    "NUL in path": b"GET /v1/models/sin\x00gle HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown method": b"FROB /v1/models/single HTTP/1.1\r\nHost: x\r\n\r\n",
    "invalid method token": b"G@T /v1/models/single HTTP/1.1\r\nHost: x\r\n\r\n",
    "too many headers": b"GET /v1/models/single HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    "header too long": b"GET /v1/models/single HTTP/1.1\r\nHost: x\r\nX-L: "
                       + b"a" * 10000 + b"\r\n\r\n",
    "request line too long": b"GET /v1/models/" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    "missing host": b"GET /v1/models/single HTTP/1.1\r\n\r\n",
    "brotli body": post("/v1/models/single:predict", BODY, "Content-Encoding: br\r\n"),
    "TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"x" * 64,
    "bad HTTP version": b"GET /v1/models/single HTTP/9.9\r\nHost: x\r\n\r\n",
}

# Requests that reach the handler but used to fail outside the JSON error path.
HANDLER_CASES = {
    "gzip that is not gzip": (post("/v1/models/single:predict", BODY,
                                   "Content-Encoding: gzip\r\n"), 400),
    "deflate that is not deflate": (post("/v1/models/single:predict", BODY,
                                         "Content-Encoding: deflate\r\n"), 400),
    "%0a in the path": (b"GET /v1/models/sin%0agle HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "%0a outside /v1": (b"GET /he%0allo HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "CONNECT": (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    "TRACE": (b"TRACE /v1/models/single HTTP/1.1\r\nHost: x\r\n\r\n", 501),
}


def _assert_one_json_error(status, headers, body, lines, expected_status=None):
    assert 400 <= status < 500 or status == 501, (status, body)
    if expected_status is not None:
        assert status == expected_status, (status, body)
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert set(payload) == {"error"} and payload["error"], payload
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    entry = json.loads(lines[0])
    assert entry["status"] == status and entry["error"] == payload["error"][:300]


@pytest.mark.parametrize("name", list(HTTP_LAYER_CASES))
def test_http_layer_errors_are_json_with_one_log_line(server, logs, name):
    status, headers, body = raw_http(server.url, HTTP_LAYER_CASES[name])
    _assert_one_json_error(status, headers, body, logs, 400)
    assert json.loads(body)["error"].startswith("Malformed HTTP request: ")
    assert "\n" not in json.loads(body)["error"]


@pytest.mark.parametrize("name", list(HANDLER_CASES))
def test_handler_errors_are_json_with_one_log_line(server, logs, name):
    data, expected = HANDLER_CASES[name]
    status, headers, body = raw_http(server.url, data)
    _assert_one_json_error(status, headers, body, logs, expected)


def test_bad_gzip_body_is_a_400_and_the_server_carries_on(server, logs):
    status, _, body = raw_http(server.url, post("/v1/models/single:predict", BODY,
                                                "Content-Encoding: gzip\r\n"))
    assert status == 400 and json.loads(body) == {"error": (
        "Could not read the request body (Content-Encoding: gzip): Can not decode "
        "content-encoding: gzip")}
    good = gzip.compress(BODY)
    r = requests.post(f"{server.url}/v1/models/single:predict", data=good,
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json() == {"predictions": [6.5]}


def test_413_of_a_compressed_body_quotes_the_limit_of_the_decoded_body(server):
    decoded = json.dumps({"instances": [[1.0, 2.0, 3.0]] * 2000}).encode()
    compressed = gzip.compress(decoded)
    assert len(compressed) < LIMIT < len(decoded)
    r = requests.post(f"{server.url}/v1/models/single:predict", data=compressed,
                      headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    message = r.json()["error"]
    assert f"limit of {LIMIT} bytes" in message and "decoded" in message
    assert str(len(compressed)) not in message
    r = requests.post(f"{server.url}/v1/models/single:predict", data=decoded)
    assert r.status_code == 413 and r.json()["error"] == (
        f"Request body of {len(decoded)} bytes is larger than the limit of {LIMIT} bytes "
        "(--max-body-bytes).")


def test_unknown_model_names_do_not_grow_the_metrics(server):
    metrics = f"{server.url}/monitoring/prometheus/metrics"
    session = requests.Session()

    def burst(n: int) -> None:
        for _ in range(n):
            name = uuid.uuid4().hex
            assert session.post(f"{server.url}/v1/models/{name}:predict",
                                json=ROW).status_code == 404
            assert session.get(f"{server.url}/v1/models/{name}").status_code == 404
            session.request(f"X{uuid.uuid4().hex[:8].upper()}", f"{server.url}/v1/models/x")

    def series(text: str) -> set[str]:
        return {line.rsplit(" ", 1)[0] for line in text.splitlines()}

    session.get(metrics)
    burst(20)
    before = series(session.get(metrics).text)
    burst(200)
    text = session.get(metrics).text
    assert series(text) == before  # the same series; only their values changed
    assert 'model_name="(unknown)",status="NOT_FOUND"' in text
    assert not re.search(r'model(_name)?="[0-9a-f]{32}"', text)
    assert 'kflow_serve_http_requests_total{method="-",code="400"}' in text


def test_unknown_model_metrics_keep_configured_models(server):
    requests.post(f"{server.url}/v1/models/single:predict", json=ROW)
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics").text
    assert 'kflow_serve_requests_total{model="single",version="1",api="predict",code="200"}' \
        in text


def _answer(url: str, model: str) -> tuple[int, float | str]:
    r = requests.post(f"{url}/v1/models/{model}:predict", json=ROW, timeout=30)
    return r.status_code, (r.json()["predictions"][0] if r.status_code == 200 else r.text)


def test_broken_newest_version_falls_back_to_the_newest_that_loads(tmp_path):
    """v2 good on disk, v3 serving, v4 broken: deleting v3 must not leave the model
    without a version (it used to answer 404 until v4 was removed)."""
    def y(v):
        return 6.0 * v + 0.5

    write_scale_version(tmp_path, "m", 2)
    write_scale_version(tmp_path, "m", 3)
    with ServerThread(tmp_path, ServerOptions(port=0, poll_seconds=0)) as srv:
        assert _answer(srv.url, "m") == (200, y(3))
        write_broken_version(tmp_path, "m", 4)
        srv.refresh()
        assert _answer(srv.url, "m") == (200, y(3))
        shutil.rmtree(tmp_path / "m" / "3")
        # Until a replacement is loaded, the deleted version keeps serving.
        assert _answer(srv.url, "m") == (200, y(3))
        srv.refresh()
        assert _answer(srv.url, "m") == (200, y(2))
        states = {v["version"]: v["state"] for v in requests.get(
            f"{srv.url}/v1/models/m").json()["model_version_status"]}
        assert states == {"4": "END", "3": "END", "2": "AVAILABLE"}
        # A fixed v4 takes over, and v2 is unloaded.
        shutil.rmtree(tmp_path / "m" / "4")
        write_scale_version(tmp_path, "m", 4)
        srv.refresh()
        assert _answer(srv.url, "m") == (200, y(4))
        srv.refresh()
        assert srv.manager.serving_versions()["m"] == [4]


def test_fallback_from_a_broken_first_version_at_start(tmp_path):
    write_scale_version(tmp_path, "m", 1)
    write_broken_version(tmp_path, "m", 2)
    with ServerThread(tmp_path, ServerOptions(port=0, poll_seconds=0)) as srv:
        assert _answer(srv.url, "m") == (200, 6.5)
        assert srv.manager.serving_versions()["m"] == [1]


def test_every_version_becomes_unavailable_only_when_none_is_on_disk(tmp_path):
    write_scale_version(tmp_path, "m", 1)
    with ServerThread(tmp_path, ServerOptions(port=0, poll_seconds=0)) as srv:
        shutil.rmtree(tmp_path / "m" / "1")
        srv.refresh()
        assert _answer(srv.url, "m")[0] == 404


def test_symlinked_versions_log_their_resolved_path(tmp_path, caplog):
    real = tmp_path / "elsewhere"
    write_scale_version(real, "m", 1)
    base = tmp_path / "base"
    (base / "m").mkdir(parents=True)
    os.symlink(real / "m" / "1", base / "m" / "1")
    with caplog.at_level(logging.INFO, logger="kflow.serve"):
        with ServerThread(base, ServerOptions(port=0, poll_seconds=0)) as srv:
            assert _answer(srv.url, "m") == (200, 6.5)
    resolved = os.path.realpath(real / "m" / "1")
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"Loading model m version 1 from {base / 'm' / '1'} (resolved path: {resolved})"
               in m for m in messages), messages
    assert any("Model m version 1 is available (loaded from " + resolved in m
               for m in messages), messages
