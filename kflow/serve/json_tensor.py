"""JSON <-> tensors, the way TensorFlow Serving's REST API maps them.

This is a Python port of the rules of `tensorflow_serving/util/json_tensor.cc`:
request bodies in row (`instances`) or columnar (`inputs`) format, `{"b64": ...}`
binary values, the JSON-number-to-dtype rules (lossless float conversion, int
ranges), `tf.Example` building for `:classify` / `:regress`, and the response
writers (`predictions` / `outputs` / `results`, `NaN` / `Infinity` tokens,
`_bytes` outputs in base64). Error messages follow TF Serving's wording.

A NumPy fast path converts well-formed bodies in one `np.asarray` call; it is
only taken where it provably gives the same tensor, and any doubt (ragged lists,
booleans, large integers, objects) falls back to the exact element-by-element
walk, which is also what produces the error messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from kflow.serve.signature import NUMPY_DTYPES, TensorInfo, dtype_string
from kflow.serve.status import ServingError

__all__ = [
    "parse_json", "signature_name_of", "parse_predict_inputs", "parse_examples",
    "make_json_from_tensors", "make_json_from_classification", "make_json_from_regression",
    "value_to_string", "format_decimal", "error_json",
]

MAX_RANK = 64  # NumPy's limit; deeper JSON nesting is rejected.
_SNIPPET = 256  # error messages quote at most this many characters of a JSON value

DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT32, DT_UINT64 = 9, 10, 22, 23

# Integer ranges: rapidjson's IsInt/IsInt64/IsUint/IsUint64, narrowed for 8/16-bit types.
_INT_RANGE = {
    DT_INT32: (-(1 << 31), (1 << 31) - 1), DT_INT16: (-(1 << 15), (1 << 15) - 1),
    DT_INT8: (-(1 << 7), (1 << 7) - 1), DT_UINT8: (0, 255),
    DT_INT64: (-(1 << 63), (1 << 63) - 1), DT_UINT32: (0, (1 << 32) - 1),
    DT_UINT64: (0, (1 << 64) - 1),
}


class _Fallback(Exception):
    """The fast path cannot decide; take the exact walk."""


# --------------------------------------------------------------------------- helpers

def json_type_string(val: Any) -> str:
    """rapidjson's type names: Null, False, True, Object, Array, String, Number."""
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    if isinstance(val, dict):
        return "Object"
    if isinstance(val, list):
        return "Array"
    if isinstance(val, str):
        return "String"
    return "Number"


def value_to_string(val: Any, limit: int = _SNIPPET) -> str:
    """A JSON value as text for error messages, cut after `limit` characters."""
    parts: list[str] = []
    budget = [limit]

    def emit(text: str) -> None:
        parts.append(text)
        budget[0] -= len(text)
        if budget[0] < 0:
            raise StopIteration

    def walk(v: Any, depth: int) -> None:
        if isinstance(v, list):
            if depth > 32:
                emit("[...]")
                return
            emit("[")
            for i, item in enumerate(v):
                if i:
                    emit(",")
                walk(item, depth + 1)
            emit("]")
        elif isinstance(v, dict):
            if depth > 32:
                emit("{...}")
                return
            emit("{")
            for i, (k, item) in enumerate(v.items()):
                if i:
                    emit(",")
                emit(json.dumps(k, ensure_ascii=False) + ":")
                walk(item, depth + 1)
            emit("}")
        else:
            emit(_scalar_to_string(v))

    try:
        walk(val, 0)
    except StopIteration:
        return "".join(parts)[:limit] + "..."
    return "".join(parts)


def _scalar_to_string(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return format_decimal(v, double=True)
    if isinstance(v, int):
        return str(v) if v.bit_length() < 1000 else "<a very large integer>"
    return json.dumps(v, ensure_ascii=False)


def format_decimal(v: float, double: bool = False) -> str:
    """Writes a float as TF Serving does (`WriteDecimal`): 6 significant digits
    when they round-trip, else full precision; `.0` on whole numbers; NaN and
    Infinity as bare tokens."""
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    text = format(v, ".6g")
    if double:
        if float(text) != v:
            text = format(v, ".17g")
    elif np.float32(text) != np.float32(v):
        text = format(v, ".9g")
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _as_double(val: int | float) -> float:
    """A JSON number as rapidjson holds it: integers past 64 bits are doubles,
    and a literal past the double range is a parse error."""
    try:
        return float(val)
    except OverflowError:
        raise ServingError.invalid_argument(
            "JSON Parse error: Number too big to be stored in double.") from None


def _shape_string(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _format_error(doc: Any, *parts: object) -> ServingError:
    return ServingError.invalid_argument("JSON Value: ", value_to_string(doc), " ", *parts)


def _type_error(val: Any, dtype: int) -> ServingError:
    return ServingError.invalid_argument(
        "JSON Value: ", value_to_string(val), " Type: ", json_type_string(val),
        " is not of expected type: ", dtype_string(dtype))


def _is_b64_object(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def _is_element_object(val: Any) -> bool:
    return isinstance(val, dict) and not _is_b64_object(val)


def _decode_b64(val: Any) -> bytes:
    if not _is_b64_object(val):
        raise ServingError.invalid_argument(
            "JSON Value: ", value_to_string(val), " not formatted correctly for base64 data")
    text = val["b64"]
    try:
        raw = text.encode("ascii")
        raw += b"=" * (-len(raw) % 4)  # absl accepts unpadded input
        return base64.b64decode(raw, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ServingError.invalid_argument("Unable to base64 decode") from None


# --------------------------------------------------------------------------- parsing

def parse_json(body: bytes | str) -> dict:
    """Parses a request body; it must be a JSON object (`ParseJson`).

    As rapidjson with TF Serving's flags (`kParseIterativeFlag |
    kParseNanAndInfFlag | kParseStopWhenDoneFlag`): bytes after the top-level
    value are ignored, `NaN`, `Inf`, `Infinity` (signed) are numbers, and nesting
    is not limited by a recursion limit (up to :data:`MAX_DEPTH` levels here).
    """
    if not body:
        raise ServingError.invalid_argument("JSON Parse error: The document is empty")
    if _orjson_loads is not None and not _has_long_digit_run(body):
        # The fast path: orjson accepts a strict subset of what this function
        # accepts (no NaN/Inf, nothing after the value, no lone surrogates, no
        # deeper than 1024 levels) and reads it into the same Python values
        # (correctly rounded floats, ints), except integers past 64 bits, which
        # it reads as floats: bodies with a run of 19+ digits take the exact path.
        try:
            doc = _orjson_loads(body)
        except ValueError:
            pass  # not strict JSON: the exact path decides, with TF Serving's message
        else:
            if not isinstance(doc, dict):
                raise _format_error(doc, "Is not object")
            return doc
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            # Bytes rapidjson never reads (after the top-level value) may be anything.
            text = bytes(body[: exc.start]).decode("utf-8")
            bad_at = exc.start
        else:
            bad_at = None
    else:
        text, bad_at = body, None
    start = _skip_ws(text, 0)
    try:
        doc, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        doc, end = _parse_slow(text, start, exc, bad_at)
    except RecursionError:
        doc, end = _parse_slow(text, start, None, bad_at)
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise ServingError.invalid_argument(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def _find_orjson():
    try:
        from orjson import loads
    except ImportError:  # optional: the standard library path is exact on its own
        return None
    return loads


_orjson_loads = _find_orjson()
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_ALL_DIGITS_TO_9 = bytes.maketrans(b"012345678", b"999999999")
_NINETEEN_9S = b"9" * 19


def _has_long_digit_run(body: bytes | bytearray | memoryview | str) -> bool:
    """Whether `body` has 19 or more digits in a row (a number past 64 bits could be there)."""
    if isinstance(body, str):
        return _LONG_DIGITS.search(body) is not None
    # translate + memmem: ~20x faster than the regex on number-heavy bodies.
    return _NINETEEN_9S in bytes(body).translate(_ALL_DIGITS_TO_9)
MAX_DEPTH = 1_000_000  # nesting levels accepted (rapidjson parses iteratively, unbounded)
_DECODER = json.JSONDecoder()
_WS_RE = re.compile(r"[ \t\n\r]*")
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_SPECIAL = (("Infinity", math.inf), ("Inf", math.inf), ("NaN", math.nan),
            ("-Infinity", -math.inf), ("-Inf", -math.inf), ("-NaN", math.nan),
            ("true", True), ("false", False), ("null", None))


def _skip_ws(text: str, i: int) -> int:
    return _WS_RE.match(text, i).end()


class _ParseError(Exception):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message, self.offset = message, offset


def _parse_slow(text: str, start: int, first: json.JSONDecodeError | None,
                bad_at: int | None) -> tuple[Any, int]:
    """The iterative parser, for what Python's `json` refuses but rapidjson
    accepts: nesting past the recursion limit (`first` is None) and the `Inf`,
    `-Inf`, `-NaN` tokens. Other syntax errors are reported as `json` found them,
    without a second (slower) parse."""
    if first is not None and not text.startswith(("Inf", "-Inf", "-NaN"), first.pos):
        if bad_at is not None:  # the document reaches the bytes that are not UTF-8
            raise ServingError.invalid_argument(
                f"JSON Parse error: Invalid encoding in string. at offset: {bad_at}")
        msg = "The document is empty." if not text.strip() else first.msg
        raise ServingError.invalid_argument(f"JSON Parse error: {msg} at offset: {first.pos}")
    try:
        return _parse_iterative(text, start)
    except _ParseError as exc:
        if bad_at is not None and exc.offset >= len(text):
            raise ServingError.invalid_argument(
                f"JSON Parse error: Invalid encoding in string. at offset: {bad_at}") from None
        raise ServingError.invalid_argument(
            f"JSON Parse error: {exc.message} at offset: {exc.offset}") from None


def _parse_scalar(text: str, i: int) -> tuple[Any, int]:
    c = text[i]
    if c == '"':
        try:
            return json.decoder.scanstring(text, i + 1, True)
        except json.JSONDecodeError as exc:
            raise _ParseError(exc.msg, exc.pos) from None
    m = _NUMBER_RE.match(text, i)
    if m and m.end() > i and text[i:m.end()] != "-":
        token = m.group(0)
        if m.group(1) or m.group(2):
            return float(token), m.end()
        return int(token), m.end()
    for word, value in _SPECIAL:
        if text.startswith(word, i):
            return value, i + len(word)
    raise _ParseError("Invalid value.", i)


def _parse_key(text: str, i: int) -> tuple[str, int]:
    if i >= len(text) or text[i] != '"':
        raise _ParseError("Missing a name for object member.", i)
    key, i = _parse_scalar(text, i)
    i = _skip_ws(text, i)
    if i >= len(text) or text[i] != ":":
        raise _ParseError("Missing a colon after a name of object member.", i)
    return key, _skip_ws(text, i + 1)


def _parse_iterative(text: str, i: int) -> tuple[Any, int]:
    """A JSON value at `text[i:]` with an explicit stack (no recursion)."""
    n = len(text)
    stack: list[list] = []  # [container, pending key]
    while True:
        if i >= n:
            raise _ParseError("Invalid value." if stack or text.strip() else
                              "The document is empty.", i)
        c = text[i]
        if c in "[{":
            if len(stack) >= MAX_DEPTH:
                raise _ParseError(f"The document is nested too deeply (more than "
                                  f"{MAX_DEPTH} levels).", i)
            i = _skip_ws(text, i + 1)
            if c == "[":
                if i < n and text[i] == "]":
                    value, i = [], i + 1
                else:
                    stack.append([[], None])
                    continue
            elif i < n and text[i] == "}":
                value, i = {}, i + 1
            else:
                key, i = _parse_key(text, i)
                stack.append([{}, key])
                continue
        else:
            value, i = _parse_scalar(text, i)
        while True:  # attach the value; close finished containers
            if not stack:
                return value, i
            top = stack[-1]
            container = top[0]
            if top[1] is None:
                container.append(value)
            else:
                container[top[1]] = value
            i = _skip_ws(text, i)
            is_list = top[1] is None
            if i < n and text[i] == ",":
                i = _skip_ws(text, i + 1)
                if not is_list:
                    top[1], i = _parse_key(text, i)
                break
            if i < n and text[i] == ("]" if is_list else "}"):
                stack.pop()
                value, i = container, i + 1
                continue
            raise _ParseError("Missing a comma or ']' after an array element." if is_list else
                              "Missing a comma or '}' after an object member.", i)


def signature_name_of(doc: Mapping) -> str:
    """The optional `signature_name`, "" when absent (`FillSignature`)."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if not isinstance(name, str):
        raise ServingError.invalid_argument(
            "JSON Value: ", value_to_string(doc),
            " not formatted correctly. 'signature_name' key must be a string value.")
    return name


def _dense_shape(val: Any) -> list[int]:
    """The shape implied by the first element at each level (GetDenseTensorShape)."""
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if len(shape) > MAX_RANK:
            raise ServingError.invalid_argument(
                f"JSON value is nested deeper than the maximum tensor rank of {MAX_RANK}.")
        if not val:
            break
        val = val[0]
    return shape


def _convert_scalar(val: Any, dtype: int) -> Any:
    """AddValueToTensor: one JSON scalar to a Python value of the tensor's dtype."""
    if dtype in (DT_FLOAT, DT_DOUBLE):
        # Any JSON number, converted as rapidjson's GetFloat/GetDouble: rounded,
        # +-inf past the float range (json_tensor.cc, AddValueToTensor).
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise _type_error(val, dtype)
        as_double = _as_double(val)
        return as_double if dtype == DT_DOUBLE else _to_f32(as_double)
    if dtype in _INT_RANGE:
        if isinstance(val, bool) or not isinstance(val, int):
            raise _type_error(val, dtype)
        lo, hi = _INT_RANGE[dtype]
        if not lo <= val <= hi:
            raise _type_error(val, dtype)
        return val
    if dtype == DT_BOOL:
        if not isinstance(val, bool):
            raise _type_error(val, dtype)
        return val
    if dtype == DT_STRING:
        if not isinstance(val, str):
            raise _type_error(val, dtype)
        return val.encode("utf-8", "surrogatepass")
    raise ServingError.unimplemented(
        "Conversion of JSON Value: ", value_to_string(val), " to type: ", dtype_string(dtype))


def _fill(val: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    """FillTensorProto: walks the DOM in order, checking every list's level and size."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise ServingError.invalid_argument(
                "JSON Value: ", value_to_string(val), " found at incorrect level: ", level + 1,
                " in the JSON DOM. Expected at level: ", rank)
        if isinstance(val, dict):
            if dtype != DT_STRING:
                raise _type_error(val, dtype)
            out.append(_decode_b64(val))
        else:
            out.append(_convert_scalar(val, dtype))
        return
    if level >= rank:
        raise ServingError.invalid_argument(
            "Encountered list at unexpected level: ", level, " expected < ", rank)
    if len(val) != shape[level]:
        raise ServingError.invalid_argument(
            "Encountered list at unexpected size: ", len(val), " at level: ", level,
            " expected size: ", shape[level])
    for item in val:
        _fill(item, level + 1, shape, dtype, out)


def _to_array(values: list, shape: list[int], dtype: int) -> np.ndarray:
    np_dtype = NUMPY_DTYPES[dtype]
    if dtype == DT_STRING:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr.reshape(shape)
    return np.asarray(values, dtype=np_dtype).reshape(shape)


def _exact_array(val: Any, dtype: int) -> np.ndarray:
    shape = _dense_shape(val)
    values: list = []
    _fill(val, 0, shape, dtype, values)
    return _to_array(values, shape, dtype)


def _fast_array(val: Any, dtype: int, may_have_bool: bool) -> np.ndarray:
    """np.asarray, accepted only where it provably equals the exact walk."""
    if dtype not in NUMPY_DTYPES:
        raise _Fallback
    try:
        arr = np.asarray(val)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise _Fallback from None
    kind = arr.dtype.kind
    if dtype == DT_STRING:
        if kind == "U":  # numpy also turns numbers mixed with strings into strings
            cells = np.empty(arr.shape, dtype=object)
            cells[...] = val
            flat = cells.ravel().tolist()
            if not all(type(s) is str for s in flat):
                raise _Fallback
            out = np.empty(arr.size, dtype=object)
            out[:] = [s.encode("utf-8", "surrogatepass") for s in flat]
            return out.reshape(arr.shape)
        if arr.size == 0 and kind == "f":
            return np.empty(arr.shape, dtype=object)
        raise _Fallback
    if arr.size == 0:
        if kind == "f":
            return np.zeros(arr.shape, dtype=NUMPY_DTYPES[dtype])
        raise _Fallback
    if dtype == DT_BOOL:
        if kind == "b":
            return arr
        raise _Fallback
    if may_have_bool:  # numpy turns True into 1 silently; only the exact walk tells
        raise _Fallback
    np_dtype = NUMPY_DTYPES[dtype]
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if kind not in "iuf":
            raise _Fallback
        # Through double, as rapidjson (an integer becomes a double, then a float).
        with np.errstate(over="ignore"):
            return arr.astype(np.float64).astype(np_dtype)
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if dtype in _INT_RANGE:
            rlo, rhi = _INT_RANGE[dtype]
            if rlo <= lo and hi <= rhi:
                return arr.astype(np_dtype)
    raise _Fallback


def _convert(val: Any, info: TensorInfo, may_have_bool: bool) -> np.ndarray:
    try:
        return _fast_array(val, info.dtype, may_have_bool)
    except _Fallback:
        return _exact_array(val, info.dtype)


def parse_predict_inputs(doc: Mapping, inputs: Mapping[str, TensorInfo], signature_name: str,
                         *, may_have_bool: bool = True) -> tuple[str, dict[str, np.ndarray]]:
    """FillPredictRequestFromJson after the signature lookup.

    Args:
        doc: The parsed request object.
        inputs: The signature's inputs by name.
        signature_name: As requested ("" for the default), for messages.
        may_have_bool: `False` when the raw body has no `true`/`false` token,
            which lets the NumPy fast path take numeric lists. Defaults to `True`.

    Returns:
        `("row" | "columnar", {input name: array})`.
    """
    if not inputs:
        raise ServingError.invalid_argument(
            "Failed to get input map for signature: ", signature_name or "DEFAULT")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances:
        if has_inputs:
            raise _format_error(doc, "Not formatted correctly expecting only one of 'inputs' "
                                     "or 'instances' keys to exist ")
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        return "row", _instances(instances, inputs, may_have_bool)
    if has_inputs:
        return "columnar", _columns(doc["inputs"], inputs, may_have_bool)
    raise ServingError.invalid_argument("Missing 'inputs' or 'instances' key")


def _instances(instances: list, inputs: Mapping[str, TensorInfo],
               may_have_bool: bool) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(inputs) > 1:
        raise ServingError.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map")
    objects = _is_element_object(instances[0])
    names = sorted(inputs)
    try:
        if objects:
            wanted = set(names)
            for elem in instances:
                if not _is_element_object(elem) or elem.keys() != wanted:
                    raise _Fallback
            feeds = {n: _fast_array([e[n] for e in instances], inputs[n].dtype, may_have_bool)
                     for n in names}
        else:
            for elem in instances:
                if isinstance(elem, dict):
                    raise _Fallback
            feeds = {names[0]: _fast_array(instances, inputs[names[0]].dtype, may_have_bool)}
        if all(a.ndim >= 1 for a in feeds.values()):
            return feeds
    except _Fallback:
        pass
    return _instances_exact(instances, inputs, names, objects)


def _instances_exact(instances: list, inputs: Mapping[str, TensorInfo], names: list[str],
                     objects: bool) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList, element by element, with its messages."""
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    values: dict[str, list] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in inputs:
            raise ServingError.invalid_argument("JSON object: does not have named input: ", name)
        shape = _dense_shape(item)
        vals: list = []
        _fill(item, 0, shape, inputs[name].dtype, vals)
        if name not in sizes:
            sizes[name], shapes[name] = len(vals), shape
        elif sizes[name] != len(vals):
            raise ServingError.invalid_argument(
                "Expecting tensor size: ", sizes[name], " but got: ", len(vals))
        elif shapes[name] != shape:
            raise ServingError.invalid_argument(
                "Expecting shape ", _shape_string(shapes[name]), " but got: ",
                _shape_string(shape))
        values.setdefault(name, []).extend(vals)

    for count, elem in enumerate(instances):
        if objects:
            if not _is_element_object(elem):
                raise ServingError.invalid_argument(
                    "Expecting object but got list at item ", count, " of input list")
            for name, item in elem.items():
                try:
                    add_item(item, name)
                except ServingError as exc:
                    raise ServingError(exc.code, f"Failed to process element: {count} key: "
                                       f"{name} of 'instances' list. Error: {exc.to_string()}"
                                       ) from None
            if set(elem) != set(names):
                raise ServingError.invalid_argument(
                    "Failed to process element: ", count, " of 'instances' list. JSON object: ",
                    value_to_string(elem), " keys must be equal to: ", ",".join(names))
        else:
            if _is_element_object(elem):
                raise ServingError.invalid_argument(
                    "Expecting value/list but got object at item ", count, " of input list")
            try:
                add_item(elem, names[0])
            except ServingError as exc:
                raise ServingError(exc.code, f"Failed to process element: {count} of "
                                   f"'instances' list. Error: {exc.to_string()}") from None
    n = len(instances)
    return {name: _to_array(vals, [n, *shapes[name]], inputs[name].dtype)
            for name, vals in values.items()}


def _columns(val: Any, inputs: Mapping[str, TensorInfo],
             may_have_bool: bool) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap."""
    names = sorted(inputs)
    if not isinstance(val, dict) or _is_b64_object(val):
        if len(inputs) > 1:
            raise ServingError.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map")
        return {names[0]: _convert(val, inputs[names[0]], may_have_bool)}
    feeds = {}
    for name in names:
        if name not in val:
            raise ServingError.invalid_argument(
                "Missing named input: ", name, " in 'inputs' object.")
        feeds[name] = _convert(val[name], inputs[name], may_have_bool)
    return feeds


# --------------------------------------------------------------------------- tf.Example

_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_value_to_feature(val: Any, name: str, feature: Any) -> None:
    """AddValueToFeature: one JSON value appended to a tf.train.Feature."""
    kind = feature.WhichOneof("kind")

    def check(wanted: str) -> None:
        if kind is not None and kind != wanted:
            raise ServingError.invalid_argument(
                "Unexpected element type in feature: ", name, " expecting type: ",
                _KIND_NAMES[kind])

    def unexpected() -> ServingError:
        return ServingError.invalid_argument(
            "Feature: ", name, " has element with unexpected JSON type: ", json_type_string(val))

    if val is None or isinstance(val, list):
        raise unexpected()
    if isinstance(val, bool):
        check("int64_list")
        feature.int64_list.value.append(1 if val else 0)
    elif isinstance(val, dict):
        if not _is_b64_object(val):
            raise unexpected()
        check("bytes_list")
        feature.bytes_list.value.append(_decode_b64(val))
    elif isinstance(val, str):
        check("bytes_list")
        feature.bytes_list.value.append(val.encode("utf-8", "surrogatepass"))
    elif isinstance(val, int) and val <= (1 << 64) - 1 and val >= -(1 << 63):
        check("int64_list")
        if val > (1 << 63) - 1:
            raise ServingError.invalid_argument(
                "Feature: ", name, " has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(val)
    else:  # a decimal (or an integer too big for 64 bits, which rapidjson reads as one)
        check("float_list")
        feature.float_list.value.append(_to_f32(_as_double(val)))  # GetFloat: rounded


def _make_example(val: Any) -> Any:
    from tensorflow.core.example import example_pb2, feature_pb2

    if not isinstance(val, dict):
        raise ServingError.invalid_argument(
            "Example must be JSON object but got JSON ", json_type_string(val))
    example = example_pb2.Example()
    for name, content in val.items():
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_value_to_feature(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


def parse_examples(doc: Mapping) -> list[bytes]:
    """FillClassifyRegressRequestFromJson: the serialized tf.Examples to feed.

    With a `context`, each example is serialized after the context, as TF Serving
    feeds `ExampleListWithContext`; features of the example win on a clash.
    """
    context = _make_example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise _format_error(doc, "When method is classify, key 'examples' is expected and "
                                 "was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    prefix = context.SerializeToString() if context is not None else b""
    return [prefix + _make_example(e).SerializeToString() for e in examples]


# --------------------------------------------------------------------------- writing

def _format_floats_small(values: list[float], double: bool) -> list[str]:
    """`format_decimal` for a few values (NumPy's per-call cost would dominate)."""
    out = []
    append = out.append
    for v in values:
        text = _G6(v)
        if text[-1] in "nf":  # nan, inf, -inf: format_decimal's tokens
            append(format_decimal(v))
            continue
        if double:
            if float(text) != v:
                text = _G17(v)
        elif _to_f32(float(text)) != v:
            text = _G9(v)
        append(text if ("." in text or "e" in text) else text + ".0")
    return out


_G6, _G9, _G17 = "{:.6g}".format, "{:.9g}".format, "{:.17g}".format


def _to_f32(x: float) -> float:
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.inf if x > 0 else -math.inf


_F32 = struct.Struct("f")


def _format_flat(arr: np.ndarray, as_bytes: bool) -> list[str]:
    """Every element of `arr` (C order) as JSON text."""
    kind = arr.dtype.kind
    flat = arr.reshape(-1)
    if kind == "f":
        double = arr.dtype == np.float64
        if not double and arr.dtype != np.float32:
            flat = flat.astype(np.float32)
        values = flat.tolist()
        if len(values) <= 64:
            return _format_floats_small(values, double)
        out = [format(v, ".6g") for v in values]
        if out:
            back = np.asarray(out, dtype=flat.dtype)
            with np.errstate(invalid="ignore"):
                redo = np.flatnonzero(~(back == flat) | ~np.isfinite(flat))
            wide = ".17g" if double else ".9g"
            for i in redo.tolist():
                v = values[i]
                out[i] = "NaN" if v != v else (
                    ("-Infinity" if v < 0 else "Infinity") if math.isinf(v) else format(v, wide))
        return [s if ("." in s or "e" in s or s[-1] in "Ny") else s + ".0" for s in out]
    if kind in "iu":
        return [str(v) for v in flat.tolist()]
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    if kind in "OSU":
        out = []
        for v in flat.tolist():
            if isinstance(v, str):
                v = v.encode("utf-8", "surrogatepass")
            if not as_bytes:
                try:
                    out.append(json.dumps(v.decode("utf-8"), ensure_ascii=False))
                    continue
                except UnicodeDecodeError:
                    pass  # not text: base64 keeps the JSON valid
            out.append('{"b64": "' + base64.b64encode(v).decode("ascii") + '"}')
        return out
    raise ServingError.invalid_argument(
        "Failed to write JSON value for tensor type: ", arr.dtype.name)


def _nest(flat: list[str], shape: tuple[int, ...], keep: int = 0) -> list[str]:
    """Groups flat element texts into nested JSON lists, innermost first, stopping
    `keep` dimensions from the outside (keep=1 gives one text per row)."""
    items = flat
    for k in range(len(shape) - 1, keep - 1, -1):
        d = shape[k]
        if d == 0:
            items = ["[]"] * math.prod(shape[:k])
        elif d == 1:
            items = ["[" + item + "]" for item in items]
        else:
            items = ["[" + ",".join(items[i:i + d]) + "]" for i in range(0, len(items), d)]
    return items


def _tensor_json(name: str, arr: np.ndarray) -> str:
    as_bytes = arr.dtype.kind in "OS" and name.endswith("_bytes")
    return _nest(_format_flat(arr, as_bytes), arr.shape)[0]


def make_json_from_tensors(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    """MakeJsonFromTensors: `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar)."""
    if not outputs:
        raise ServingError.invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return '{"outputs": ' + _tensor_json(names[0], outputs[names[0]]) + "}"
        body = ", ".join(json.dumps(n) + ": " + _tensor_json(n, outputs[n]) for n in names)
        return '{"outputs": {' + body + "}}"
    batch = -1
    for name in names:
        arr = outputs[name]
        if arr.ndim == 0:
            raise ServingError.invalid_argument("Tensor name: ", name, " has no shape information ")
        if batch >= 0 and arr.shape[0] != batch:
            raise ServingError.invalid_argument(
                "Tensor name: ", name, " has inconsistent batch size: ", arr.shape[0],
                " expecting: ", batch)
        batch = arr.shape[0]
    if batch == 0:
        return '{"predictions": []}'
    if len(names) == 1:
        return '{"predictions": ' + _tensor_json(names[0], outputs[names[0]]) + "}"
    rows = {}
    for name in names:
        arr = outputs[name]
        as_bytes = arr.dtype.kind in "OS" and name.endswith("_bytes")
        rows[name] = _nest(_format_flat(arr, as_bytes), arr.shape, keep=1)
    keys = {n: json.dumps(n) + ": " for n in names}
    objects = ("{" + ", ".join(keys[n] + rows[n][i] for n in names) + "}" for i in range(batch))
    return '{"predictions": [' + ", ".join(objects) + "]}"


def make_json_from_classification(labels: list[list[str]], scores: list[list[float]]) -> str:
    """MakeJsonFromClassificationResult: `{"results": [[[label, score], ...], ...]}`."""
    if not labels:
        raise ServingError.invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for row_labels, row_scores in zip(labels, scores, strict=True):
        pairs = ("[" + json.dumps(lab, ensure_ascii=False) + ", " + format_decimal(s) + "]"
                 for lab, s in zip(row_labels, row_scores, strict=True))
        rows.append("[" + ", ".join(pairs) + "]")
    return '{"results": [' + ", ".join(rows) + "]}"


def make_json_from_regression(values: list[float]) -> str:
    """MakeJsonFromRegressionResult: `{"results": [v, ...]}`."""
    if not values:
        raise ServingError.invalid_argument("Cannot convert empty RegressionResults to JSON")
    return '{"results": [' + ", ".join(format_decimal(v) for v in values) + "]}"


def error_json(message: str) -> str:
    """`{"error": "<message>"}`, valid JSON (and encodable) whatever the message holds."""
    return json.dumps({"error": message})

