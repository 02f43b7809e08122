"""JSON <-> tensor rules of TF Serving's REST API (kflow.serve.json_tensor), no server.

Expected messages are TF Serving's (tensorflow_serving/util/json_tensor.cc).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kflow.serve import json_tensor as jt
from kflow.serve.config import BatchingOptions, ModelEntry, parse_model_config_text
from kflow.serve.signature import TensorInfo
from kflow.serve.status import ServingError

F32 = TensorInfo(1, (-1, 2))
ONE = {"x": F32}
TWO = {"a": TensorInfo(1, (-1, 2)), "b": TensorInfo(7, (-1,))}


def predict(body, inputs=ONE, may_have_bool=True):
    return jt.parse_predict_inputs(body, inputs, "", may_have_bool=may_have_bool)


def error_of(fn, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------ request parsing

def test_row_and_columnar_formats_give_the_same_tensor():
    fmt, row = predict({"instances": [[1, 2], [3.5, 4]]})
    assert fmt == "row" and row["x"].dtype == np.float32
    fmt, col = predict({"inputs": [[1, 2], [3.5, 4]]})
    assert fmt == "columnar"
    np.testing.assert_array_equal(row["x"], col["x"])
    np.testing.assert_array_equal(predict({"inputs": {"x": [[1, 2], [3.5, 4]]}})[1]["x"], col["x"])


def test_named_instances_are_batched_per_input():
    body = {"instances": [{"a": [1, 2], "b": "u"}, {"a": [3, 4], "b": {"b64": "dg=="}}]}
    _, feeds = predict(body, TWO)
    np.testing.assert_array_equal(feeds["a"], [[1, 2], [3, 4]])
    assert feeds["b"].tolist() == [b"u", b"v"]


def test_b64_values_decode_with_and_without_padding():
    info = {"s": TensorInfo(7, (-1,))}
    _, feeds = predict({"instances": [{"b64": "aGVsbG8="}, {"b64": "aGVsbG8"}]}, info)
    assert feeds["s"].tolist() == [b"hello", b"hello"]
    assert "Unable to base64 decode" in str(error_of(predict, {"instances": [{"b64": "!!"}]}, info))


# Floats and doubles take any JSON number, rounded (json_tensor.cc:293 AddValueToTensor;
# json_tensor_test.cc:183 FloatTensorWithPrecisionLoss, :224 FloatTensorThatExceedsMaxReturnsInf).
@pytest.mark.parametrize("dtype,value,ok", [
    (1, 16777215, True), (1, 16777216, True), (1, 1e30, True), (1, 1e39, True),
    (2, 2**53 - 1, True), (2, 2**53, True), (3, 2**31 - 1, True), (3, 2**31, False),
    (3, 1.0, False), (9, 2**63 - 1, True), (9, 2**63, False), (22, -1, False),
    (23, 2**64 - 1, True), (4, 256, False), (10, 1, False), (10, True, True),
    (1, True, False), (7, 1, False), (1, "1", False), (1, None, False),
])
def test_json_number_to_dtype_rules(dtype, value, ok):
    info = {"x": TensorInfo(dtype, (-1,))}
    if ok:
        predict({"instances": [value]}, info)
    else:
        assert error_of(predict, {"instances": [value]}, info).http_status == 400


def test_nan_and_infinity_are_accepted_for_floats():
    _, feeds = predict(jt.parse_json(b'{"instances": [[NaN, Infinity], [-Infinity, 1]]}'))
    assert math.isnan(feeds["x"][0, 0]) and feeds["x"][1, 0] == -np.inf


@pytest.mark.parametrize("body,message", [
    ({"instances": [[1, 2], [3]]}, "Failed to process element: 1 of 'instances' list. Error: "
                                   "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1"),
    ({"instances": [[[1, 2]], [[1], [2]]]}, "Expecting shape [1,2] but got: [2,1]"),
    ({"inputs": [[1, 2], [3]]},
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ({"inputs": [[1, [2]]]}, "Encountered list at unexpected level: 2 expected < 2"),
    ({"inputs": [[1, 2], 3]}, "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. "
                              "Expected at level: 2"),
    ({"instances": [[1, "a"]]}, 'JSON Value: "a" Type: String is not of expected type: float'),
    ({"instances": [[1, True]]}, "JSON Value: true Type: True is not of expected type: float"),
    ({"instances": 5}, "JSON Value: {\"instances\":5} Expecting 'instances' to be an list/array"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"instances": [1], "inputs": [1]}, "Not formatted correctly expecting only one of 'inputs' "
                                        "or 'instances' keys to exist"),
    ({}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [{"x": [1, 2]}, [1, 2]]},
     "Expecting object but got list at item 1 of input list"),
    ({"instances": [[1, 2], {"x": [1, 2]}]}, "Expecting value/list but got object at item 1"),
    ({"instances": [{"y": [1, 2]}]}, "key: y of 'instances' list. Error: INVALID_ARGUMENT: JSON "
                                     "object: does not have named input: y"),
])
def test_predict_request_errors_use_tf_serving_messages(body, message):
    error = error_of(predict, body)
    assert error.http_status == 400
    assert message in error.message


def test_multi_input_errors():
    assert "instances is a plain list, but expecting list of objects" in str(
        error_of(predict, {"instances": [[1, 2]]}, TWO))
    assert "inputs is a plain value/list, but expecting an object" in str(
        error_of(predict, {"inputs": [[1, 2]]}, TWO))
    assert "Missing named input: b in 'inputs' object." in str(
        error_of(predict, {"inputs": {"a": [[1, 2]]}}, TWO))
    assert "keys must be equal to: a,b" in str(  # json_tensor.cc:572
        error_of(predict, {"instances": [{"a": [1, 2]}]}, TWO))
    assert "Failed to get input map for signature: DEFAULT" in str(error_of(predict, {}, {}))


@pytest.mark.parametrize("body,message", [
    (b"", "JSON Parse error: The document is empty"),
    (b"   ", "JSON Parse error: The document is empty."),
    (b"{", "JSON Parse error:"),
    (b"\xff\xfe{", "JSON Parse error:"),
    (b"[1, 2]", "JSON Value: [1,2] Is not object"),
    (b"[" * 100000 + b"]" * 100000, "Is not object"),
    (b'{"a": ' + b"[" * 3000, "JSON Parse error: Invalid value. at offset: 3006"),
    (b'{"a": "\xff"}', "JSON Parse error: Invalid encoding in string. at offset: 7"),
])
def test_parse_json_errors(body, message):
    assert message in error_of(jt.parse_json, body).message


# ------------------------------------------------------------------ ported from TF Serving
# tensorflow_serving/util/json_tensor_test.cc and json_tensor.cc (commit 9d981c5c).

def test_deeply_nested_well_formed_is_accepted():
    """json_tensor_test.cc:87 DeeplyNestedWellFormed (500000 levels there; rapidjson
    parses iteratively)."""
    body = b'{"instances":[1], "nested":' + b"[" * 200000 + b"]" * 200000 + b"}"
    doc = jt.parse_json(body)
    _, feeds = predict(doc, {"default": TensorInfo(3, None)})
    assert feeds["default"].tolist() == [1]


def test_deeply_nested_malformed_signature_name():
    """json_tensor_test.cc:104 DeeplyNestedMalformed."""
    doc = jt.parse_json(b'{"signature_name":' + b"[" * 200000 + b"]" * 200000 + b"}")
    assert "key must be a string value" in error_of(jt.signature_name_of, doc).message


def test_bytes_after_the_top_level_object_are_ignored():
    """json_tensor.cc:483-485: kParseStopWhenDoneFlag."""
    assert jt.parse_json(b'{"instances": [1]} trailing \xff\x00 bytes') == {"instances": [1]}
    assert jt.parse_json(b'{"instances": [1]}{"x": 2}') == {"instances": [1]}


def test_nan_and_inf_tokens_of_rapidjson():
    """json_tensor.cc:484: kParseNanAndInfFlag accepts Inf, -Inf, -NaN besides Python's."""
    doc = jt.parse_json(b'{"instances": [Inf, -Inf, -NaN, NaN, Infinity, -Infinity]}')
    values = doc["instances"]
    assert values[:2] == [math.inf, -math.inf] and math.isnan(values[2])
    assert "Invalid value." in error_of(jt.parse_json, b'{"instances": [Inx]}').message or \
        "Expecting value" in error_of(jt.parse_json, b'{"instances": [Inx]}').message


def test_float_tensor_with_precision_loss():
    """json_tensor_test.cc:183 FloatTensorWithPrecisionLoss."""
    info = {"default": TensorInfo(1, None)}
    for value in (1435774380, 1435774380.0):
        _, feeds = predict({"instances": [value]}, info)
        assert feeds["default"].tolist() == [float(np.float32(1435774380))]


def test_float_tensor_past_the_float_range():
    """json_tensor_test.cc:224 FloatTensorThatExceedsMaxReturnsInf and :261
    FloatTensorThatExceedsMinReturnsZero."""
    info = {"default": TensorInfo(1, None)}
    big, tiny = np.finfo(np.float64).max, np.finfo(np.float64).tiny
    _, feeds = predict({"instances": [big, -big, tiny, -tiny]}, info)
    assert feeds["default"].tolist() == [math.inf, -math.inf, 0.0, -0.0]


@pytest.mark.parametrize("dtype,value,ok", [
    (23, 2**64 - 1, True), (23, 2**64, False), (23, -1, False),  # IsUint64
    (9, -(2**63), True), (9, -(2**63) - 1, False),  # IsInt64
    (22, 2**32 - 1, True), (22, 2**32, False),  # IsUint
])
def test_integer_ranges(dtype, value, ok):
    """json_tensor.cc:317, :332 (rapidjson's IsInt64 / IsUint64 / IsUint)."""
    info = {"x": TensorInfo(dtype, (-1,))}
    if ok:
        assert predict({"instances": [value]}, info)[1]["x"].tolist() == [value]
    else:
        assert "is not of expected type" in error_of(predict, {"instances": [value]}, info).message


def test_zero_batch_outputs():
    """json_tensor_test.cc:1153, :1170 (FromJson...ZeroBatchTensor(s)) and :1198 (...Errors)."""
    assert jt.make_json_from_tensors({"int_tensor": np.zeros((0, 2), np.int32)}, "row") == \
        '{"predictions": []}'
    two = {"str_tensor": np.empty((0, 1, 2), object), "float_tensor": np.zeros((0, 3, 4))}
    assert jt.make_json_from_tensors(two, "row") == '{"predictions": []}'
    bad = {"int_tensor": np.zeros((0, 2), np.int32),
           "str_tensor": np.array([[b"foo", b"bar"]], object)}
    assert "inconsistent batch size" in error_of(jt.make_json_from_tensors, bad, "row").message


def test_bare_b64_value_in_columnar_format():
    """json_tensor.cc:617 (FillTensorMapFromInputsMap): a lone base64 object is the
    one input's value; json_tensor_test.cc:607 in a named map."""
    info = {"s": TensorInfo(7, None)}
    assert predict({"inputs": {"b64": "aGVsbG8="}}, info)[1]["s"].tolist() == b"hello"
    assert predict({"inputs": {"s": {"b64": "aGVsbG8="}}}, info)[1]["s"].tolist() == b"hello"
    assert "is not of expected type: float" in error_of(
        predict, {"inputs": {"b64": "aGVsbG8="}}, {"x": TensorInfo(1, None)}).message


def test_signature_name_must_be_a_string():
    assert jt.signature_name_of({"signature_name": "two"}) == "two"
    assert "'signature_name' key must be a string value." in str(
        error_of(jt.signature_name_of, {"signature_name": 100}))


def test_error_values_are_truncated():
    message = error_of(predict, {"instances": 5, "pad": "x" * 100000}).message
    assert len(message) < 400 and "..." in message


# ------------------------------------------------------------------ examples

def test_examples_build_tf_examples_with_context():
    from tensorflow.core.example import example_pb2

    raw = jt.parse_examples({"context": {"c": "ctx", "n": 1},
                             "examples": [{"x": [1.5, 2.0], "n": 7, "ok": True,
                                           "img": {"b64": "AAE="}}]})
    example = example_pb2.Example.FromString(raw[0])
    f = example.features.feature
    assert list(f["x"].float_list.value) == [1.5, 2.0]
    assert list(f["n"].int64_list.value) == [7]  # the example's value wins over the context
    assert list(f["ok"].int64_list.value) == [1]
    assert list(f["img"].bytes_list.value) == [b"\x00\x01"]
    assert list(f["c"].bytes_list.value) == [b"ctx"]


@pytest.mark.parametrize("doc,message", [
    ({}, "When method is classify, key 'examples' is expected and was not found"),
    ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
    ({"examples": []}, "'examples' value is an empty array"),
    ({"examples": [3]}, "Example must be JSON object but got JSON Number"),
    ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
    ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: Array"),
    ({"examples": [{"x": [1, "a"]}]},
     "Unexpected element type in feature: x expecting type: int64"),
    ({"examples": [{"x": [1.5, 2]}]},
     "Unexpected element type in feature: x expecting type: float"),
    # json_tensor.cc:787
    ({"examples": [{"x": 2**63}]}, "Feature: x has uint64_t element. Only int64_t is supported."),
    ({"examples": [{"x": {"a": 1}}]}, "Feature: x has element with unexpected JSON type: Object"),
])
def test_example_errors(doc, message):
    assert message in error_of(jt.parse_examples, doc).message


# ------------------------------------------------------------------ writing responses

def test_float_formatting_matches_tf_serving():
    texts = jt._format_flat(np.array([0.1, 1, 1e6, 1e-5, np.nan, np.inf, -np.inf, 0.123456789,
                                      100000], np.float32), False)
    assert texts == ["0.1", "1.0", "1e+06", "1e-05", "NaN", "Infinity", "-Infinity",
                     "0.123456791", "100000.0"]
    assert jt.format_decimal(0.1 + 0.2, double=True) == "0.30000000000000004"


def test_row_and_columnar_responses():
    outputs = {"p": np.array([[0.5, 0.25]], np.float32), "c": np.array([1], np.int64)}
    assert json.loads(jt.make_json_from_tensors(outputs, "row")) == {
        "predictions": [{"p": [0.5, 0.25], "c": 1}]}
    assert json.loads(jt.make_json_from_tensors(outputs, "columnar")) == {
        "outputs": {"p": [[0.5, 0.25]], "c": [1]}}
    assert json.loads(jt.make_json_from_tensors({"y": np.zeros((2, 0))}, "row")) == {
        "predictions": [[], []]}


def test_bytes_outputs_and_non_utf8_strings_are_base64():
    outputs = {"img_bytes": np.array([b"ab"], object), "t": np.array([b"\xff"], object)}
    assert json.loads(jt.make_json_from_tensors(outputs, "row")) == {
        "predictions": [{"img_bytes": {"b64": "YWI="}, "t": {"b64": "/w=="}}]}


def test_row_responses_need_a_common_batch_size():
    assert "has inconsistent batch size" in error_of(
        jt.make_json_from_tensors, {"a": np.zeros(2), "b": np.zeros(3)}, "row").message
    assert "has no shape information" in error_of(
        jt.make_json_from_tensors, {"a": np.float32(1)}, "row").message
    assert json.loads(jt.make_json_from_tensors({"a": np.float32(1)}, "columnar")) == {
        "outputs": 1.0}


# ------------------------------------------------------------------ fast path == exact walk

_leaf = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                  st.booleans(), st.text(max_size=3), st.none(),
                  st.builds(lambda s: {"b64": s}, st.sampled_from(["", "YQ==", "YWI", "!"])))
_json = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=20)
_dtypes = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 9, 10, 22, 23])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_json, dtype=_dtypes)
def test_fast_path_agrees_with_the_exact_walk(value, dtype):
    try:
        exact = jt._exact_array(value, dtype)
    except ServingError:
        exact = None
    text = json.dumps(value)
    may_have_bool = "true" in text or "false" in text
    try:
        fast = jt._fast_array(value, dtype, may_have_bool)
    except jt._Fallback:
        return
    assert exact is not None, f"fast path accepted what TF Serving rejects: {value!r}"
    assert fast.shape == exact.shape and fast.dtype == exact.dtype
    if dtype == 7:
        assert fast.tolist() == exact.tolist()
    else:
        np.testing.assert_array_equal(fast, exact)


# ------------------------------------------------------------------ config files

def test_models_config_parsing(tmp_path):
    (tmp_path / "m").mkdir()
    text = """model_config_list { config { name: "m" base_path: "/models/m"
      model_platform: "tensorflow" model_version_policy { latest { num_versions: 2 } }
      version_labels { key: "stable" value: 3 } }
      config { name: "n" base_path: "rel" model_version_policy { specific { versions: 4 } } } }"""
    m, n = parse_model_config_text(text, str(tmp_path / "models.config"), tmp_path)
    assert m == ModelEntry("m", tmp_path / "m", "latest", 2, (), (("stable", 3),))
    assert m.aspired([1, 5, 3]) == [5, 3]
    assert n.base_path == tmp_path / "rel" and n.aspired([3, 4, 5]) == [4]
    from kflow.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple times"):
        parse_model_config_text('model_config_list { config { name: "a" } config { name: "a" } }',
                                "x")
    with pytest.raises(ConfigError, match="Could not parse"):
        parse_model_config_text("model_config_list { nonsense: 1 }", "x")


def test_batching_parameters_file():
    opts = BatchingOptions.from_text_proto(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 500 } "
        "num_batch_threads { value: 2 } allowed_batch_sizes: 16 allowed_batch_sizes: 64")
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.num_batch_threads,
            opts.allowed_batch_sizes) == (64, 500, 2, (16, 64))
    from kflow.errors import ConfigError

    with pytest.raises(ConfigError, match="must equal max_batch_size"):
        BatchingOptions(max_batch_size=32, allowed_batch_sizes=(8, 16)).validate()
    with pytest.raises(ConfigError, match="Could not parse"):
        BatchingOptions.from_text_proto("max_batch_size: 3")


# ------------------------------------------------------------------ the orjson fast path

def _exact(body):
    """parse_json without the orjson fast path (the standard-library path alone)."""
    saved, jt._orjson_loads = jt._orjson_loads, None
    try:
        return jt.parse_json(body)
    except ServingError as exc:
        return ("error", exc.code, exc.message)
    finally:
        jt._orjson_loads = saved


def _fast(body):
    try:
        return jt.parse_json(body)
    except ServingError as exc:
        return ("error", exc.code, exc.message)


def test_the_serving_extra_installs_the_fast_parser():
    assert jt._orjson_loads is not None, "orjson (kflow[serving]) is not importable"


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, -(1 << 63),
                       -(1 << 63) - 1, 10 ** 18, 10 ** 19])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON_VALUES, key=st.sampled_from(["instances", "inputs", "x"]),
       tail=st.sampled_from(["", " ", "\n", " trailing", "}", "\x00"]),
       indent=st.sampled_from([None, 1]))
def test_fast_path_reads_every_body_as_the_exact_path(value, key, tail, indent):
    text = json.dumps({key: value}, indent=indent) + tail
    for body in (text, text.encode("utf-8", "surrogatepass")):
        assert repr(_fast(body)) == repr(_exact(body)), body[:200]


@pytest.mark.parametrize("body", [
    b'{"a": 123456789012345678901234567890}', b'{"a": 18446744073709551616}',
    b'{"a": 1E400}', b'{"a": NaN, "b": -Infinity}', b'{"a":"\\ud800"}', b'{"a": 1} x',
    b'\xef\xbb\xbf{"a": 1}', b'{"a": "\xff"}', b'[1, 2]', b'"text"', b'{"a": [1,2,]}',
    b'{"a": 0.12345678901234567890123}', b'{"a":1,"a":2}', b'{"a": -0}'])
def test_fast_path_edge_cases_match_the_exact_path(body):
    assert repr(_fast(body)) == repr(_exact(body))
