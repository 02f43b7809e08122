"""serving/client.py against a tiny local HTTP stub that answers like TF Serving's REST API."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from tests.conftest import REPO


def _load_client():
    spec = importlib.util.spec_from_file_location("serving_client", REPO / "serving" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client = _load_client()

STATUS = {"model_version_status": [
    {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    {"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}},
]}


class _Stub(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        type(self).requests.append(("GET", self.path, None))
        if self.path == "/v1/models/digits":
            self._reply(200, STATUS)
        elif self.path == "/v1/models/digits/versions/1/metadata":
            self._reply(200, {"model_spec": {"name": "digits", "version": "1"},
                              "metadata": {"signature_def": {"signature_def": {}}}})
        else:
            self._reply(404, {"error": "Servable not found for request: Latest(nope)"})

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length).decode()
        type(self).requests.append(("POST", self.path, raw))
        body = json.loads(raw)  # Python's json reads the NaN literal like TF Serving does
        if "instances" in body:
            n = len(body["instances"])
            self._reply(200, {"predictions": [{"class_id": 1, "class_name": "pass",
                                               "probabilities": [0.2, 0.8]}] * n})
        elif "inputs" in body:
            n = len(next(iter(body["inputs"].values())))
            self._reply(200, {"outputs": {"class_id": [1] * n,
                                          "probabilities": [[0.2, 0.8]] * n}})
        else:
            self._reply(400, {"error": "Missing 'inputs' or 'instances' key"})


@pytest.fixture
def server():
    _Stub.requests = []
    httpd = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Stub.requests
    httpd.shutdown()
    httpd.server_close()


def test_status_and_metadata(server):
    url, seen = server
    c = client.ServingClient(url, "digits")
    assert c.status() == STATUS and c.available_versions() == [2]
    meta = client.ServingClient(url + "/", "digits", version=1).metadata()
    assert meta["model_spec"]["version"] == "1"
    assert [s[:2] for s in seen] == [("GET", "/v1/models/digits"), ("GET", "/v1/models/digits"),
                                     ("GET", "/v1/models/digits/versions/1/metadata")]


def test_predict_rows_builds_instances(server):
    url, seen = server
    c = client.ServingClient(url, "students")
    rows = [{"hours_studied": np.float32(7.5), "sleep_hours": float("nan"), "school": "Hilltop"},
            {"hours_studied": 2.0, "sleep_hours": 8.0, "school": ""}]
    preds = c.predict_rows(rows)
    assert preds[0]["class_name"] == "pass" and len(preds) == 2
    method, path, raw = seen[-1]
    assert (method, path) == ("POST", "/v1/models/students:predict")
    assert '"sleep_hours": NaN' in raw  # TF Serving's JSON accepts the NaN literal
    body = json.loads(raw)
    assert body["signature_name"] == "serving_default"
    assert body["instances"][0]["hours_studied"] == 7.5 and body["instances"][1]["school"] == ""


def test_predict_rows_from_columns_and_images(server):
    url, seen = server
    c = client.ServingClient(url, "digits", version=3)
    images = np.zeros((2, 8, 8, 1), dtype="float32")
    c.predict_rows([{"features": im} for im in images])
    body = json.loads(seen[-1][2])
    assert seen[-1][1] == "/v1/models/digits/versions/3:predict"
    assert np.asarray(body["instances"][0]["features"]).shape == (8, 8, 1)
    c.predict_rows({"a": np.array([1, 2]), "b": ["x", "y"]})
    assert json.loads(seen[-1][2])["instances"] == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


def test_predict_columns_builds_inputs(server):
    url, seen = server
    c = client.ServingClient(url, "digits", label="stable")
    out = c.predict_columns({"features": np.ones((3, 8, 8, 1), "float32"),
                             "raw": np.array([b"\x00\xff"], dtype=object)})
    assert out["probabilities"].shape == (3, 2) and out["class_id"].tolist() == [1, 1, 1]
    method, path, raw = seen[-1]
    assert path == "/v1/models/digits/labels/stable:predict"
    body = json.loads(raw)
    assert np.asarray(body["inputs"]["features"]).shape == (3, 8, 8, 1)
    assert body["inputs"]["raw"] == [{"b64": "AP8="}]


def test_server_errors_are_raised_with_their_message(server):
    url, _ = server
    with pytest.raises(client.ServingError, match="answered 404 .*Servable not found"):
        client.ServingClient(url, "nope").status()
    with pytest.raises(client.ServingError, match="cannot reach TF Serving"):
        client.ServingClient("http://127.0.0.1:9", "digits", timeout=2).status()


def test_request_bodies_without_a_server():
    assert client.row_request([[1, 2]], None) == {"instances": [[1, 2]]}
    assert client.column_request({"x": np.arange(2)}) == {
        "inputs": {"x": [0, 1]}, "signature_name": "serving_default"}
    with pytest.raises(ValueError, match="different lengths"):
        client.row_request({"a": [1, 2], "b": [1]})
