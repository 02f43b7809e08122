"""Conformance with TensorFlow Serving's REST API, written from its documentation
(`api_rest.md`) and sources (`http_rest_api_handler.cc`, `json_tensor.cc`).

Every test runs against `kflow serve`, and again against the real
`tensorflow_model_server` when that binary is on PATH (skipped otherwise). A few
assertions that depend on where kflow deliberately differs are marked
`kflow_only` (see kflow/serve/README.md, "Differences from TF Serving").
"""

from __future__ import annotations

import base64
import json
import math
import shutil

import numpy as np
import pytest
import requests

from kflow.serve.config import ServerOptions
from kflow.serve.server import ServerThread
from kflow.serve.testing import (
    SINGLE_B,
    SINGLE_W,
    TFServingProcess,
    multi_expected,
    shared_test_base,
)

TFS_BINARY = shutil.which("tensorflow_model_server")


class Target:
    def __init__(self, kind: str, url: str):
        self.kind, self.url = kind, url
        self.session = requests.Session()

    def call(self, method: str, path: str, body=None, data: bytes | None = None):
        if body is not None:
            data = json.dumps(body).encode()
        r = self.session.request(method, self.url + path, data=data, timeout=60)
        try:
            payload = r.json()
        except ValueError:
            payload = r.text
        return r.status_code, payload


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return shared_test_base(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module",
                params=["kflow"] + (["tensorflow_model_server"] if TFS_BINARY else []))
def target(request, base):
    if request.param == "kflow":
        server = ServerThread(base, ServerOptions(port=0, poll_seconds=0)).start()
        yield Target("kflow", server.url)
        server.stop()
        return
    tfs = TFServingProcess(base / "models.config", TFS_BINARY).start("single")
    yield Target("tfs", tfs.url)
    tfs.stop()


@pytest.mark.skipif(TFS_BINARY is None, reason="tensorflow_model_server is not on PATH, so "
                    "the conformance suite ran against kflow serve only")
def test_suite_also_ran_against_tensorflow_model_server():
    """A marker: when this passes, every test above ran against the real server too."""


def error_of(status_payload, status: int, fragment: str):
    got_status, payload = status_payload
    assert got_status == status, payload
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    assert fragment in payload["error"], payload["error"]


# ------------------------------------------------------------------ model status

def test_status_of_a_model(target):
    status, payload = target.call("GET", "/v1/models/single")
    assert status == 200
    assert payload == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                          "error_message": ""}}]}


def test_status_lists_every_version_newest_first(target):
    status, payload = target.call("GET", "/v1/models/multi")
    assert status == 200
    assert [v["version"] for v in payload["model_version_status"]] == ["2", "1"]
    assert {v["state"] for v in payload["model_version_status"]} == {"AVAILABLE"}


def test_status_of_one_version_and_label(target):
    status, payload = target.call("GET", "/v1/models/multi/versions/1")
    assert status == 200 and [v["version"] for v in payload["model_version_status"]] == ["1"]
    status, payload = target.call("GET", "/v1/models/multi/labels/canary")
    assert status == 200 and "2" in [v["version"] for v in payload["model_version_status"]]


@pytest.mark.parametrize("path,status,message", [
    ("/v1/models/nope", 404, "Could not find any versions of model nope"),
    ("/v1/models/multi/versions/9", 404, "Could not find version 9 of model multi"),
    ("/v1/models", 400, "Missing model name in request."),
    ("/v1/models/multi/versions/99999999999999999999", 400,
     "Failed to convert version: 99999999999999999999 to numeric."),
    ("/v1/models/multi/versions/x", 400, "Malformed request: GET /v1/models/multi/versions/x"),
])
def test_status_errors(target, path, status, message):
    error_of(target.call("GET", path), status, message)


# ------------------------------------------------------------------ metadata

def test_metadata_has_the_signature_defs(target):
    status, payload = target.call("GET", "/v1/models/single/metadata")
    assert status == 200
    assert payload["model_spec"] == {"name": "single", "signature_name": "", "version": "1"}
    sigs = payload["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "two"} <= set(sigs)
    default = sigs["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    x = default["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "3"]
    assert default["outputs"]["y"]["dtype"] == "DT_FLOAT"


def test_metadata_by_version_and_label(target):
    assert target.call("GET", "/v1/models/multi/versions/1/metadata")[1]["model_spec"][
        "version"] == "1"
    assert target.call("GET", "/v1/models/multi/labels/canary/metadata")[1]["model_spec"][
        "version"] == "2"
    status, payload = target.call("GET", "/v1/models/examples/metadata")
    sigs = payload["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/classify"
    assert sigs["regress"]["method_name"] == "tensorflow/serving/regress"


def test_metadata_errors(target):
    error_of(target.call("GET", "/v1/models/nope/metadata"), 404,
             "Servable not found for request: Latest(nope)")
    error_of(target.call("GET", "/v1/models/multi/versions/9/metadata"), 404,
             "Servable not found for request: Specific(multi, 9)")
    error_of(target.call("GET", "/v1/models/multi/labels/nope/metadata"), 400,
             "Unrecognized servable version label: nope")


# ------------------------------------------------------------------ predict

def single_y(rows):
    return (np.asarray(rows, np.float32) * SINGLE_W).sum(-1) + SINGLE_B


def test_predict_row_format_single_input(target):
    status, payload = target.call("POST", "/v1/models/single:predict",
                                  {"instances": [[1, 2, 3], [0.5, 0, -1]]})
    assert status == 200 and set(payload) == {"predictions"}
    np.testing.assert_allclose(payload["predictions"], single_y([[1, 2, 3], [0.5, 0, -1]]))


def test_predict_columnar_format(target):
    for inputs in ([[1, 2, 3]], {"x": [[1, 2, 3]]}):
        status, payload = target.call("POST", "/v1/models/single:predict", {"inputs": inputs})
        assert status == 200 and set(payload) == {"outputs"}
        np.testing.assert_allclose(payload["outputs"], single_y([[1, 2, 3]]))


def test_predict_named_inputs_row_and_columnar(target):
    a = [[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 0.5, 2.0]]
    b = [[1.0, 1.0], [0.0, 1.0]]
    probs, classes = multi_expected(np.array(a), np.array(b), version=2)
    status, payload = target.call("POST", "/v1/models/multi:predict", {
        "instances": [{"a": a[0], "b": b[0]}, {"a": a[1], "b": b[1]}]})
    assert status == 200
    rows = payload["predictions"]
    assert [r["class_id"] for r in rows] == classes.tolist()
    np.testing.assert_allclose([r["probabilities"] for r in rows], probs, rtol=1e-5, atol=1e-7)
    status, payload = target.call("POST", "/v1/models/multi:predict", {
        "inputs": {"a": a, "b": b}})
    assert status == 200 and set(payload["outputs"]) == {"probabilities", "class_id"}
    assert payload["outputs"]["class_id"] == classes.tolist()


def test_predict_multiple_outputs_and_signature_name(target):
    status, payload = target.call("POST", "/v1/models/single:predict", {
        "signature_name": "two", "instances": [[1, 2, 3]]})
    assert status == 200
    y = float(single_y([[1, 2, 3]])[0])
    assert payload == {"predictions": [{"y": y, "y_squared": y * y}]}


def test_predict_by_version_and_label(target):
    body = {"instances": [{"a": [0, 0, 0, 0], "b": [0, 0]}]}
    for path, version in [("/v1/models/multi/versions/1:predict", 1),
                          ("/v1/models/multi/versions/2:predict", 2),
                          ("/v1/models/multi/labels/stable:predict", 1),
                          ("/v1/models/multi/labels/canary:predict", 2),
                          ("/v1/models/multi:predict", 2)]:
        status, payload = target.call("POST", path, body)
        assert status == 200, payload
        expected = multi_expected(np.zeros((1, 4)), np.zeros((1, 2)), version)[1]
        assert payload["predictions"][0]["class_id"] == int(expected[0]), path


def test_predict_binary_values_and_bytes_outputs(target):
    status, payload = target.call("POST", "/v1/models/strings:predict", {
        "instances": [{"b64": base64.b64encode(b"hello").decode()}, "abc"]})
    assert status == 200
    rows = payload["predictions"]
    assert [r["length"] for r in rows] == [5, 3]
    # `upper_bytes` ends in _bytes: written as {"b64": ...}
    assert [base64.b64decode(r["upper_bytes"]["b64"]) for r in rows] == [b"HELLO", b"ABC"]


def test_predict_named_row_with_one_input(target):
    status, payload = target.call("POST", "/v1/models/strings:predict", {
        "instances": [{"text": "hi"}, {"text": {"b64": "aGk="}}]})
    assert status == 200 and [r["length"] for r in payload["predictions"]] == [2, 2]


def test_predict_dtypes_bool_int32_int64_double(target):
    status, payload = target.call("POST", "/v1/models/strings:predict", {
        "signature_name": "typed",
        "instances": [{"flag": True, "count": 3, "big": 2**40, "wide": 0.1},
                      {"flag": False, "count": -7, "big": -(2**62), "wide": 1e300}]})
    assert status == 200, payload
    assert payload["predictions"] == [
        {"flag_out": False, "count_out": 4, "big_out": 2**40, "wide_out": 0.2},
        {"flag_out": True, "count_out": -6, "big_out": -(2**62), "wide_out": 2e300}]


def test_predict_nan_and_infinity(target):
    r = target.session.post(target.url + "/v1/models/single:predict",
                            data=b'{"instances": [[NaN, 0, 0], [Infinity, 0, 0]]}', timeout=60)
    assert r.status_code == 200
    values = json.loads(r.text)["predictions"]  # Python's json reads NaN / Infinity
    assert math.isnan(values[0]) and values[1] == math.inf


# ------------------------------------------------------------------ classify / regress

def test_classify(target):
    status, payload = target.call("POST", "/v1/models/examples:classify", {
        "examples": [{"x": 1.0}, {"x": -2.5}]})
    assert status == 200 and set(payload) == {"results"}
    for row, x in zip(payload["results"], [1.0, -2.5], strict=True):
        assert [label for label, _ in row] == ["neg", "pos"]
        p = 1 / (1 + math.exp(-x))
        np.testing.assert_allclose([s for _, s in row], [1 - p, p], rtol=1e-5)


def test_regress_with_context_and_lists(target):
    status, payload = target.call("POST", "/v1/models/examples:regress", {
        "signature_name": "regress", "context": {"offset": 10.0},
        "examples": [{"x": 1.0}, {"x": [-2.5]}]})
    assert status == 200
    np.testing.assert_allclose(payload["results"], [12.0, 5.0])
    status, payload = target.call("POST", "/v1/models/examples/versions/1:regress", {
        "signature_name": "regress", "examples": [{"x": 0.5}]})
    assert status == 200 and payload["results"] == [1.0]


@pytest.mark.parametrize("api,body,status,message", [
    # Signatures are checked by structure, not method name (regressor.cc:183,
    # classifier.cc:209; the method-name check is off by default, server.h:102).
    ("regress", {"examples": [{"x": 1.0}]}, 400, "Expected one output Tensor."),
    ("classify", {"signature_name": "predict", "examples": [{"x": 1.0}]}, 400,
     'Expected classification signature outputs to contain at least one of "classes" or '
     '"scores". Signature was: '),
    ("classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
     "No signature was found with the name: nope"),
    ("classify", {"examples": []}, 400, "'examples' value is an empty array"),
    ("classify", {"inputs": [1]}, 400, "'examples' is expected and was not found"),
    ("classify", {"examples": {"x": 1}}, 400, "Expecting 'examples' value to be an list/array"),
    ("classify", {"examples": [1]}, 400, "Example must be JSON object but got JSON Number"),
    ("classify", {"examples": [{"x": None}]}, 400,
     "Feature: x has element with unexpected JSON type: Null"),
    ("classify", {"examples": [{"x": [1, "a"]}]}, 400,
     "Unexpected element type in feature: x expecting type: int64"),
])
def test_classify_regress_errors(target, api, body, status, message):
    error_of(target.call("POST", f"/v1/models/examples:{api}", body), status, message)


def test_classify_model_errors_are_400(target):
    # x is a float feature; an integer makes parsing fail inside the model.
    status, payload = target.call("POST", "/v1/models/examples:classify",
                                  {"examples": [{"x": 1}]})
    assert status == 400 and "error" in payload


# ------------------------------------------------------------------ documented error paths

@pytest.mark.parametrize("data,message", [
    (b"{bad json", "JSON Parse error"),
    (b"", "JSON Parse error"),
    (b"[1, 2]", "Is not object"),
    (b'{"signature_name": 100, "instances": [[1, 2, 3]]}',
     "'signature_name' key must be a string value."),
    (b'{"signature_name": "nope", "instances": [[1, 2, 3]]}',
     'Serving signature name: "nope" not found in signature def'),
    (b'{"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}',
     "expecting only one of 'inputs' or 'instances' keys to exist"),
    (b'{"instances": {"x": 1}}', "Expecting 'instances' to be an list/array"),  # json_tensor.cc:684
    (b'{"instances": []}', "No values in 'instances' array"),
    (b'{"foo": 1}', "Missing 'inputs' or 'instances' key"),
    (b'{"instances": [[1, 2, 3], [1, 2]]}', "Expecting tensor size: 3 but got: 2"),
    (b'{"instances": [[1, 2, "3"]]}', 'JSON Value: "3" Type: String is not of expected type: '
                                      "float"),
    (b'{"instances": [[1, 2, true]]}', "Type: True is not of expected type: float"),
    (b'{"inputs": [[1, 2, 3], [1, [2], 3]]}', "Encountered list at unexpected"),
])
def test_predict_request_errors(target, data, message):
    error_of(target.call("POST", "/v1/models/single:predict", data=data), 400, message)


def test_named_input_errors(target):
    path = "/v1/models/multi:predict"
    error_of(target.call("POST", path, {"instances": [[1, 2, 3, 4]]}), 400,
             "instances is a plain list, but expecting list of objects as multiple input "
             "tensors required as per tensorinfo_map")
    error_of(target.call("POST", path, {"inputs": {"a": [[1, 2, 3, 4]]}}), 400,
             "Missing named input: b in 'inputs' object.")
    error_of(target.call("POST", path, {"instances": [{"a": [1, 2, 3, 4], "c": [1, 2]}]}), 400,
             "does not have named input: c")
    error_of(target.call("POST", path, {"instances": [{"a": [1, 2, 3, 4]}]}), 400,
             "keys must be equal to: a,b")  # json_tensor.cc:572


def test_base64_errors(target):
    error_of(target.call("POST", "/v1/models/strings:predict",
                         {"instances": [{"b64": "!!not base64!!"}]}), 400,
             "Unable to base64 decode")


def test_wrong_shape_is_a_400(target):
    status, payload = target.call("POST", "/v1/models/single:predict", {"instances": [[1, 2]]})
    assert status == 400 and "error" in payload


@pytest.mark.parametrize("path,status,message", [
    ("/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/multi/versions/9:predict", 404,
     "Servable not found for request: Specific(multi, 9)"),
    ("/v1/models/multi/labels/nope:predict", 400, "Unrecognized servable version label: nope"),
    ("/v1/models/single:explain", 400, "Malformed request: POST /v1/models/single:explain"),
    ("/v1/models/single", 400, "Malformed request: POST /v1/models/single"),
    ("/v1/models/single/versions/1/labels/x:predict", 400, "Malformed request"),
])
def test_routing_errors(target, path, status, message):
    error_of(target.call("POST", path, {"instances": [[1, 2, 3]]}), status, message)


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/models/single:predict"),
    ("DELETE", "/v1/models/single"),
    ("PUT", "/v1/models/single:predict"),
])
def test_wrong_methods(target, method, path):
    error_of(target.call(method, path), 400, f"Malformed request: {method} {path}")


def test_model_names_are_url_decoded(target):
    status, _ = target.call("POST", "/v1/models/%73ingle:predict", {"instances": [[1, 2, 3]]})
    assert status == 200


# ------------------------------------------------------------------ ported: HTTP behaviour
# From tensorflow_serving (commit 9d981c5c): model_servers/http_rest_api_util.cc,
# model_servers/http_server.cc, util/net_http/server/internal/evhttp_request.cc and
# evhttp_server.cc, model_servers/get_model_status_impl.cc, server_core.cc.

def raw_request(target: Target, method: str, path: str, headers: dict | None = None,
                data: bytes | None = None) -> requests.Response:
    return target.session.request(method, target.url + path, headers=headers, data=data,
                                  timeout=60)


@pytest.mark.parametrize("method,path,data", [
    ("GET", "/v1/models/single", None),
    ("GET", "/v1/models/single/metadata", None),
    ("POST", "/v1/models/single:predict", b'{"instances": [[1, 2, 3]]}'),
    ("POST", "/v1/models/single:predict", b'{"instances": 1}'),
    ("GET", "/v1/models/nope", None),
])
def test_content_type_is_exactly_application_json(target, method, path, data):
    """http_rest_api_util.cc:37 (AddHeaders): on answers and errors alike."""
    r = raw_request(target, method, path, data=data)
    assert r.headers["Content-Type"] == "application/json"


def test_query_strings_are_part_of_the_matched_path(target):
    """evhttp_request.cc:108 (uri_path() is path + '?' + query), matched by the
    regular expressions of http_rest_api_util.cc: the query joins the model name
    of a status request, and a predict path with one is malformed."""
    status, payload = target.call("GET", "/v1/models/single?x=1")
    assert status == 404 and payload == {
        "error": "Could not find any versions of model single?x=1"}
    error_of(target.call("POST", "/v1/models/single:predict?x=1", {"instances": [[1, 2, 3]]}),
             400, "Malformed request: POST /v1/models/single:predict?x=1")


def test_options_is_a_cors_preflight(target):
    """http_server.cc:170-176: 200 with an Origin header, else 400."""
    r = raw_request(target, "OPTIONS", "/v1/models/single:predict",
                    headers={"Origin": "https://example.com"})
    assert r.status_code == 200 and r.content == b""
    r = raw_request(target, "OPTIONS", "/v1/models/single:predict")
    assert r.status_code == 400
    if target.kind == "kflow":  # TF Serving sends no body; kflow's errors are all JSON
        assert r.json() == {"error": "Origin header is missing in CORS preflight"}


def test_head_is_a_malformed_request_without_a_body(target):
    """http_rest_api_handler.cc:85-105: only POST and GET are dispatched; a HEAD
    answer carries no body (HTTP)."""
    r = raw_request(target, "HEAD", "/v1/models/single")
    assert r.status_code == 400 and r.content == b""
    assert r.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
def test_methods_the_http_server_does_not_allow(target, method):
    """evhttp_server.cc:114 (evhttp_set_allowed_methods): libevent answers others 501."""
    r = raw_request(target, method, "/v1/models/single")
    assert r.status_code == 501
    if target.kind == "kflow":
        assert r.json() == {"error": f"Method not implemented: {method}"}


def test_version_label_latest(target):
    """server_core.cc:891: an unknown label (`latest` is not special) is 400 for
    the model APIs; get_model_status_impl.cc:82: the status API ignores labels,
    so it lists every version with 200."""
    error_of(target.call("POST", "/v1/models/single/labels/latest:predict",
                         {"instances": [[1, 2, 3]]}), 400,
             "Unrecognized servable version label: latest")
    error_of(target.call("GET", "/v1/models/single/labels/latest/metadata"), 400,
             "Unrecognized servable version label: latest")
    status, payload = target.call("GET", "/v1/models/multi/labels/latest")
    assert status == 200
    assert sorted(v["version"] for v in payload["model_version_status"]) == ["1", "2"]


def test_bytes_after_the_body_are_ignored(target):
    """json_tensor.cc:485 (kParseStopWhenDoneFlag)."""
    status, payload = target.call("POST", "/v1/models/single:predict",
                                  data=b'{"instances": [[1, 2, 3]]} trailing bytes')
    assert status == 200
    np.testing.assert_allclose(payload["predictions"], [14.5])


def test_integers_for_floats_are_rounded_not_refused(target):
    """json_tensor.cc:293-295 and json_tensor_test.cc:183 (FloatTensorWithPrecisionLoss)."""
    status, payload = target.call("POST", "/v1/models/single:predict",
                                  data=b'{"instances": [[16777217, 0, 0]]}')
    assert status == 200 and payload["predictions"] == [16777216.0]  # float32: +0.5 is lost


def test_bare_b64_value_in_columnar_format(target):
    """json_tensor.cc:617: `{"inputs": {"b64": ...}}` is the one input's value."""
    status, payload = target.call("POST", "/v1/models/strings:predict",
                                  {"inputs": [{"b64": "aGk="}]})
    assert status == 200 and payload["outputs"]["length"] == [2]
    status, payload = target.call("POST", "/v1/models/strings:predict",
                                  {"inputs": {"b64": "aGk="}})
    assert status == 400, payload  # a scalar for a [-1] input: the model refuses it
