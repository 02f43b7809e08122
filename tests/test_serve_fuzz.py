"""Hostile and malformed input, generated with hypothesis: thousands of requests
against one in-process `kflow serve`. Every answer must be a 2xx/4xx with a JSON
body (`{"error": ...}` for 4xx): never a 500, never a crash or a hang."""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kflow.serve.config import BatchingOptions, ServerOptions
from kflow.serve.server import ServerThread
from kflow.serve.testing import shared_test_base

MAX_BODY = 1 << 20
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = shared_test_base(tmp_path_factory.getbasetemp())
    options = ServerOptions(port=0, poll_seconds=0, max_body_bytes=MAX_BODY,
                            batching=BatchingOptions(batch_timeout_micros=0))
    with ServerThread(base, options) as srv:
        srv.session = requests.Session()
        yield srv
        # the server must still be healthy after everything thrown at it
        assert srv.server.manager.serving_versions()["single"] == [1]
        r = requests.post(f"{srv.url}/v1/models/single:predict", json={"instances": [[1, 2, 3]]})
        assert r.json() == {"predictions": [14.5]}


def send(server, method: str, path: str, data: bytes | None = None):
    r = server.session.request(method, server.url + path, data=data, timeout=60)
    assert r.status_code < 500, (method, path, data[:300] if data else None, r.text[:500])
    if method == "HEAD" or (path == "/monitoring/prometheus/metrics" and r.status_code == 200):
        return r
    payload = json.loads(r.text)  # valid JSON (NaN / Infinity tokens allowed)
    if r.status_code >= 400:
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str), r.text
    return r


# ------------------------------------------------------------------ strategies

names = st.sampled_from(["a", "b", "x", "text", "flag", "count", "big", "wide", "y", ""])
numbers = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 16777216, 2**31, 2**63, 2**64, 1e39, 0.5]))
b64 = st.builds(lambda s: {"b64": s}, st.one_of(st.sampled_from(["aGk=", "aGk", "", "!!", "===="]),
                                                 st.text(max_size=8)))
leaf = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=6), b64)
json_value = st.recursive(
    leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                  st.dictionaries(names, inner, max_size=4)),
    max_leaves=30)
rows = st.lists(st.lists(numbers, min_size=0, max_size=4), min_size=0, max_size=4)  # ragged
tensor_like = st.one_of(json_value, rows, st.lists(rows, max_size=3))
named = st.dictionaries(names, tensor_like, max_size=4)
predict_body = st.one_of(
    st.fixed_dictionaries({"instances": st.one_of(tensor_like, st.lists(named, max_size=4))},
                          optional={"signature_name": st.one_of(
                              st.sampled_from(["two", "typed", "nope", "__saved_model_init_op",
                                               "serving_default", "regress", "predict"]),
                              json_value)}),
    st.fixed_dictionaries({"inputs": st.one_of(tensor_like, named)},
                          optional={"signature_name": st.sampled_from(["two", "typed", "x"])}),
    st.dictionaries(st.sampled_from(["instances", "inputs", "signature_name", "examples",
                                     "context", "other"]), json_value, max_size=4),
    json_value,
)
models = st.sampled_from(["single", "multi", "strings", "examples", "nope", "%20", "a%2Fb",
                          "multi%ZZ", "%C3%28"])
suffixes = st.sampled_from(["", "/versions/1", "/versions/2", "/versions/0", "/labels/stable",
                            "/labels/canary", "/labels/nope", "/versions/999999999999999999999",
                            "/labels/%FF"])


# ------------------------------------------------------------------ tests

@settings(max_examples=1000, **SETTINGS)
@given(model=models, suffix=suffixes, body=predict_body)
def test_predict_with_generated_bodies(server, model, suffix, body):
    data = json.dumps(body).encode()
    r = send(server, "POST", f"/v1/models/{model}{suffix}:predict", data)
    if r.status_code == 200:
        assert set(r.json()) in ({"predictions"}, {"outputs"})


examples = st.one_of(
    st.lists(st.dictionaries(st.sampled_from(["x", "offset", "other"]),
                             st.one_of(leaf, st.lists(leaf, max_size=3)), max_size=3),
             max_size=4),
    json_value)


@settings(max_examples=400, **SETTINGS)
@given(api=st.sampled_from(["classify", "regress"]), model=models, body=st.fixed_dictionaries(
    {"examples": examples}, optional={"context": json_value, "signature_name": st.sampled_from(
        ["regress", "predict", "nope", "serving_default"])}))
def test_classify_regress_with_generated_bodies(server, api, model, body):
    r = send(server, "POST", f"/v1/models/{model}:{api}", json.dumps(body).encode())
    if r.status_code == 200:
        assert set(r.json()) == {"results"}


path_chars = st.text(alphabet=string.ascii_letters + string.digits + "/:%._-~?#&=+ ",
                     max_size=40)


@settings(max_examples=500, **SETTINGS)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
       path=st.one_of(
           st.builds(lambda m, s, t: f"/v1/models/{m}{s}{t}", models, suffixes,
                     st.sampled_from(["", ":predict", ":classify", ":regress", ":PREDICT",
                                      "/metadata", "/METADATA", ":", "/", "//x"])),
           st.builds(lambda p: "/" + quote(p, safe="/:%"), path_chars),
           st.sampled_from(["/", "/v1", "/v1/", "/v1/models/", "/monitoring/prometheus/metrics",
                            "/V1/MODELS/single", "/v2/models/single"])))
def test_generated_paths_and_methods(server, method, path):
    send(server, method, path, b'{"instances": [[1, 2, 3]]}' if method != "GET" else None)


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda b, n: json.dumps(b).encode()[:n], predict_body, st.integers(0, 200)),
    st.builds(lambda d: b"[" * d + b"]" * d, st.integers(1, 5000)),
    st.builds(lambda d: b'{"instances": ' + b"[" * d + b"1" + b"]" * d + b"}",
              st.integers(1, 3000)),
    st.sampled_from([b"", b" ", b"null", b"1", b'"x"', b"{}", b'{"instances": 1e999}',
                     b'{"instances": [' + b"9" * 5000 + b"]}", b"\xef\xbb\xbf{}",
                     b'{"instances": ["\\ud800"]}', b'{"instances": [NaN, -Infinity]}',
                     b'{"instances": [[1, 2, 3]]}' * 2]),
)


@settings(max_examples=500, **SETTINGS)
@given(model=st.sampled_from(["single", "strings", "multi", "examples"]),
       api=st.sampled_from(["predict", "classify", "regress"]), data=raw_bodies)
def test_raw_bytes_bodies(server, model, api, data):
    send(server, "POST", f"/v1/models/{model}:{api}", data)


def test_huge_and_deep_bodies(server):
    url = "/v1/models/single:predict"
    r = send(server, "POST", url, b'{"instances": [' + b"[1, 2, 3]," * 200_000 + b"[1,2,3]]}")
    assert r.status_code == 413
    r = send(server, "POST", url, b"[" * 400_000 + b"]" * 400_000)
    assert r.status_code == 400
    # Large but within the limit, one ragged row at the very end: the exact walk runs.
    rows = b"[1, 2, 3]," * 90_000
    r = send(server, "POST", url, b'{"instances": [' + rows + b"[1, 2]]}")
    assert r.status_code == 400 and "element: 90000" in r.json()["error"]
    r = send(server, "POST", url, b'{"instances": [' + rows + b"[1, 2, 3]]}")
    assert r.status_code == 200 and len(r.json()["predictions"]) == 90_001
