#!/usr/bin/env python3
"""Run a kflow-exported .tflite model on a device: LiteRT and NumPy only.

    python kflow_tflite_runner.py model_int8.tflite --input rows.csv
    python kflow_tflite_runner.py model_int8.tflite --input rows.json --format json
    python kflow_tflite_runner.py model_int8.tflite --benchmark --runs 500

Reads `metadata.json` (task, class names, input names and shapes; without it,
the same metadata embedded in the .tflite file as the flatbuffer metadata
entry `kflow_metadata`) and, when
the export moved the preprocessing out of the model, `preprocessing.json`
(fill values, means and variances, vocabularies) from the model's folder, and
applies them with NumPy before invoking the interpreter.

Inputs:
  .npy   rows of the model's single input, e.g. (N, 8, 8, 1) or flattened (N, 64)
  .npz   one array per input name
  .csv   a header row; columns named like the inputs or as in the training file
         ("previous score"), or one column per feature / flattened value of a
         single input; an empty cell is a missing value, yes/no cells are fine
  .json  TF Serving style {"instances": [row, ...]} or {"inputs": {name: [...]}},
         a list of rows, or {name: [values]}; a row is {name: value} or a list

Needs only `pip install ai-edge-litert numpy` (no TensorFlow). Python >= 3.8.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

__version__ = "1"
SIGNATURE_KEY = "serving_default"


class RunnerError(Exception):
    """A problem with the user's files or arguments (printed as one line)."""


# -- metadata and preprocessing --------------------------------------------------------
def load_metadata(model_path: str, metadata_path: str | None = None) -> dict:
    """metadata.json beside the model (or labels.json: a list of class names)."""
    folder = os.path.dirname(os.path.abspath(model_path))
    candidates = [metadata_path] if metadata_path else [
        os.path.join(folder, "metadata.json"), os.path.join(folder, "labels.json")]
    for path in candidates:
        if path and os.path.isfile(path):
            with open(path) as f:
                data = json.load(f)
            if isinstance(data, list):
                data = {"class_names": data}
            data.setdefault("_folder", os.path.dirname(os.path.abspath(path)))
            return data
    if metadata_path:
        raise RunnerError(f"metadata file '{metadata_path}' does not exist")
    embedded = embedded_metadata(model_path) if os.path.isfile(model_path) else None
    if embedded is not None:
        embedded.setdefault("_folder", folder)
        return embedded
    return {"_folder": folder}


def embedded_metadata(model_path: str, name: str = "kflow_metadata") -> dict | None:
    """The JSON metadata kflow embeds in a .tflite file (flatbuffer `Model.metadata`).

    A minimal flatbuffer reader (no flatbuffers package needed): Model field 6
    is `metadata` ([Metadata {name: string, buffer: uint}]), field 4 `buffers`
    ([Buffer {data: [ubyte]}]).
    """
    import struct

    with open(model_path, "rb") as f:
        buf = f.read()

    def u32(pos):
        return struct.unpack_from("<I", buf, pos)[0]

    def field(table, index):
        vtable = table - struct.unpack_from("<i", buf, table)[0]
        if 4 + 2 * index >= struct.unpack_from("<H", buf, vtable)[0]:
            return None
        off = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
        return table + off if off else None

    def vector(pos):
        start = pos + u32(pos)
        return start + 4, u32(start)

    try:
        root = u32(0)
        meta_field, buffers_field = field(root, 6), field(root, 4)
        if meta_field is None or buffers_field is None:
            return None
        items, count = vector(meta_field)
        for i in range(count):
            entry = items + 4 * i + u32(items + 4 * i)
            name_field, buffer_field = field(entry, 0), field(entry, 1)
            if name_field is None or buffer_field is None:
                continue
            start, length = vector(name_field)
            if buf[start:start + length].decode("utf-8", "replace") != name:
                continue
            buffers, _ = vector(buffers_field)
            index = u32(buffer_field)
            table = buffers + 4 * index + u32(buffers + 4 * index)
            data_field = field(table, 0)
            if data_field is None:
                return None
            start, length = vector(data_field)
            return json.loads(buf[start:start + length].decode("utf-8"))
    except (struct.error, ValueError, IndexError):
        return None
    return None


def load_preprocessing(metadata: dict, path: str | None = None) -> dict | None:
    name = path or metadata.get("preprocessing")
    if not name:
        return None
    full = name if os.path.isabs(name) else os.path.join(metadata["_folder"], name)
    if not os.path.isfile(full):
        raise RunnerError(f"the preprocessing sidecar '{full}' named by the metadata is missing")
    with open(full) as f:
        return json.load(f)


def _encode(idx, depth, mode):
    idx = np.asarray(idx, dtype="int64")
    if mode == "int":
        return idx
    if mode == "one_hot":
        if idx.ndim > 1 and idx.shape[-1] == 1:
            idx = idx[..., 0]
        return np.eye(depth, dtype="float32")[idx]
    if idx.ndim == 1:
        idx = idx[:, None]
    flat = idx.reshape(-1, idx.shape[-1])
    out = np.zeros((flat.shape[0], depth), dtype="float32")
    for j in range(flat.shape[1]):
        np.add.at(out, (np.arange(flat.shape[0]), flat[:, j]), 1.0)
    if mode == "multi_hot":
        out = np.minimum(out, 1.0)
    return out.reshape(*idx.shape[:-1], depth)


def _as_text(a):
    out = np.empty(a.shape, dtype=object)
    for i, v in np.ndenumerate(a):
        out[i] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return out


def _step(step, args):
    op = step["op"]
    x = args[0]
    if op == "concat":
        return np.concatenate(args, axis=step["axis"])
    if op == "identity":
        return x
    if op == "impute":
        fill = step["fill_value"]
        if x.dtype == object or x.dtype.kind in "US":
            x = _as_text(x)
            fill_arr = np.broadcast_to(np.asarray(fill, dtype=object), x.shape)
            return np.where(x == "", fill_arr, x)
        if x.dtype.kind == "f":
            return np.where(np.isnan(x), np.asarray(fill, dtype=x.dtype), x)
        return np.where(x == -1, np.asarray(fill, dtype=x.dtype), x)
    if op == "normalize":
        x = np.asarray(x, dtype="float32")
        mean = np.asarray(step["mean"], dtype="float32")
        std = np.maximum(np.sqrt(np.asarray(step["variance"], dtype="float32")),
                         np.float32(step["epsilon"]))
        return ((x - mean) / std).astype("float32")
    if op == "rescale":
        x = np.asarray(x, dtype="float32")
        return (x * np.float32(np.asarray(step["scale"], "float32"))
                + np.asarray(step["offset"], "float32")).astype("float32")
    if op == "lookup":
        vocab = step["vocabulary"]
        table = {v: i for i, v in enumerate(vocab)}
        if step.get("mask_token") is not None:
            table[step["mask_token"]] = 0
        keys = _as_text(x) if vocab and isinstance(vocab[0], str) else np.asarray(x, "int64")
        oov = step["oov_index"]
        idx = np.empty(keys.shape, dtype="int64")
        for i, k in np.ndenumerate(keys):
            k = k if isinstance(k, str) else int(k)
            j = table.get(k, oov)
            if j is None:
                raise RunnerError(f"value {k!r} is not in the vocabulary of "
                                  f"'{step['output']}' (no out-of-vocabulary slot)")
            idx[i] = j
        return _encode(idx, step["depth"], step["output_mode"])
    if op == "tokenize":  # TextVectorization: standardize, split on spaces, ids, pad/cut
        import re

        index = {w: i for i, w in enumerate(step["vocabulary"])}
        length, std = step["sequence_length"], step["standardize"] or ""
        punct = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
        text = _as_text(x).reshape(-1)
        out = np.zeros((len(text), length), dtype="int64")
        for r, doc in enumerate(text):
            doc = doc.lower() if "lower" in std else doc
            doc = punct.sub("", doc) if "strip" in std else doc
            ids = [index.get(w, 1) for w in doc.split()][:length]
            out[r, :len(ids)] = ids
        return out
    if op == "encode":
        return _encode(x, step["depth"], step["output_mode"])
    if op == "bucketize":
        idx = np.digitize(np.asarray(x, "float32"), np.asarray(step["boundaries"], "float32"))
        return _encode(idx, step["depth"], step["output_mode"])
    raise RunnerError(f"unknown preprocessing step '{op}' (a newer kflow export?)")


def apply_sidecar(spec: dict, arrays: dict) -> dict:
    """Runs the preprocessing steps: {raw input: array} -> {model input: array}."""
    env = {}
    for name, info in spec["inputs"].items():
        if name not in arrays:
            raise RunnerError(f"the input has no '{name}' column; the model needs: "
                              f"{', '.join(spec['inputs'])}")
        a = np.asarray(arrays[name])
        shape = info["shape"]
        if a.ndim == len(shape) - 1:
            a = a.reshape(*a.shape, 1) if shape[-1] == 1 else a
        env[name] = a if info["dtype"] == "string" else a.astype(info["dtype"])
    for step in spec["steps"]:
        env[step["output"]] = _step(step, [env[i] for i in step["inputs"]])
    return {key: np.asarray(env[out["from"]]).astype(out["dtype"])
            for key, out in spec["outputs"].items()}


# -- reading inputs ----------------------------------------------------------------------
def _raw_inputs(metadata: dict, interp_inputs: dict) -> list[dict]:
    """The inputs a user provides: from metadata, else from the interpreter's signature."""
    if metadata.get("inputs"):
        return metadata["inputs"]
    out = []
    for name, d in interp_inputs.items():
        dtype = np.dtype(d["dtype"])
        kind = "string" if dtype.kind in "SUO" else (
            "float32" if d["quantization"][0] else dtype.name)
        out.append({"name": name, "tflite_name": name, "dtype": kind,
                    "shape": [None, *[int(s) for s in d["shape_signature"][1:]]]})
    return out


def _parse_value(text, dtype):
    if dtype == "string":
        return "" if text is None else str(text)
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "nan", "na",
                                                                        "null", "none")):
        return -1 if dtype.startswith("int") else float("nan")
    if isinstance(text, bool):
        return float(text)
    if isinstance(text, str) and text.strip().lower() in ("true", "false", "yes", "no"):
        return 1.0 if text.strip().lower() in ("true", "yes") else 0.0
    return int(float(text)) if dtype.startswith("int") else float(text)


def _column(values, dtype):
    if dtype == "string":
        return np.asarray([_parse_value(v, dtype) for v in values], dtype=object)
    return np.asarray([_parse_value(v, dtype) for v in values], dtype=dtype)


def _shape_rows(a, spec):
    """Reshapes (N, ...) values to the input's shape (flattened rows are accepted)."""
    shape = [int(s) if s is not None else -1 for s in spec["shape"][1:]]
    a = np.asarray(a)
    if not shape:
        return a.reshape(-1)
    if shape == [1] and a.ndim == 1:
        return a.reshape(-1, 1)
    if -1 not in shape and a.shape[1:] != tuple(shape):
        size = int(np.prod(shape))
        if a.size % size:
            raise RunnerError(f"input '{spec['name']}' takes rows of shape {tuple(shape)}; "
                              f"got {a.shape[1:]}")
        a = a.reshape(-1, *shape)
    return a


def _from_rows(rows, specs):
    """A list of rows ({name: value} or lists) -> {input name: array}."""
    if not rows:
        raise RunnerError("the input holds no rows")
    if isinstance(rows[0], dict):
        arrays = {}
        for spec in specs:
            cols = spec.get("columns")
            key = spec["name"] if spec["name"] in rows[0] else spec.get("column")
            if key in rows[0]:
                vals = [r[key] for r in rows]
                if spec["dtype"] == "string":
                    vals = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in vals]
                    arrays[spec["name"]] = _column(vals, "string")
                else:
                    arrays[spec["name"]] = np.asarray(
                        [np.asarray(v, dtype="float64") if isinstance(v, list)
                         else _parse_value(v, spec["dtype"]) for v in vals],
                        dtype=spec["dtype"])
            elif cols and all(c in rows[0] for c in cols):
                arrays[spec["name"]] = np.asarray(
                    [[_parse_value(r[c], spec["dtype"]) for c in cols] for r in rows],
                    dtype=spec["dtype"])
            else:
                raise RunnerError(f"the rows have no '{spec['name']}' value; the model "
                                  f"takes: {', '.join(s['name'] for s in specs)}")
        return arrays
    if len(specs) != 1:
        raise RunnerError("rows given as lists need a single-input model; use "
                          "{name: value} rows")
    spec = specs[0]
    if spec["dtype"] == "string":
        return {spec["name"]: _column(rows, "string")}
    return {spec["name"]: np.asarray(rows, dtype="float64").astype(spec["dtype"])}


def read_inputs(path: str, specs: list[dict]) -> dict:
    """Reads .npy/.npz/.csv/.json into {raw input name: array of rows}."""
    if not os.path.isfile(path):
        raise RunnerError(f"input file '{path}' does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        if len(specs) != 1:
            raise RunnerError(".npy input needs a single-input model; use .npz, .csv or .json")
        arrays = {specs[0]["name"]: np.load(path, allow_pickle=False)}
    elif ext == ".npz":
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
        if len(specs) == 1 and specs[0]["name"] not in arrays and len(arrays) == 1:
            arrays = {specs[0]["name"]: next(iter(arrays.values()))}
    elif ext in (".csv", ".tsv", ".txt"):
        with open(path, newline="") as f:
            reader = csv.reader(f, delimiter="\t" if ext == ".tsv" else ",")
            table = [r for r in reader if r]
        if not table:
            raise RunnerError(f"'{path}' is empty")
        header, body = table[0], table[1:]
        names = ({s["name"] for s in specs} | {c for s in specs for c in s.get("columns") or []}
                 | {s["column"] for s in specs if s.get("column")})
        header = [h.strip() for h in header]
        if any(h in names for h in header):
            arrays = _from_rows([dict(zip(header, r)) for r in body],  # noqa: B905 (py3.8)
                                specs)
        elif len(specs) == 1:
            body = table if all(_is_number(v) for v in header) else body
            arrays = {specs[0]["name"]: np.asarray(
                [[_parse_value(v, specs[0]["dtype"]) for v in r] for r in body],
                dtype=specs[0]["dtype"])}
        else:
            raise RunnerError(f"the CSV header of '{path}' names none of the model's inputs "
                              f"({', '.join(sorted(names))})")
    elif ext == ".json":
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict) and "instances" in data:
            arrays = _from_rows(data["instances"], specs)
        elif isinstance(data, dict) and "inputs" in data:
            inputs = data["inputs"]
            if isinstance(inputs, dict):
                arrays = {k: _array(v, _spec(specs, k, "dtype")) for k, v in inputs.items()}
            else:
                arrays = _from_rows(inputs, specs)
        elif isinstance(data, list):
            arrays = _from_rows(data, specs)
        elif isinstance(data, dict):
            arrays = {k: _array(v, _spec(specs, k, "dtype")) for k, v in data.items()}
        else:
            raise RunnerError(f"cannot read rows from '{path}'")
    else:
        raise RunnerError(f"unsupported input file type '{ext}'; use .npy, .npz, .csv or .json")
    out = {}
    for spec in specs:
        if spec["name"] not in arrays:
            raise RunnerError(f"the input has no '{spec['name']}'; the model takes: "
                              f"{', '.join(s['name'] for s in specs)}")
        a = arrays[spec["name"]]
        if spec["dtype"] != "string":
            a = np.asarray(a).astype(spec["dtype"])
        out[spec["name"]] = _shape_rows(a, spec)
    return out


def _array(values, dtype):
    """Column values (JSON) -> array; null becomes NaN (numbers) or "" (strings)."""
    if dtype == "string":
        return _column(values, "string")
    try:
        return np.asarray(values, dtype="float64")
    except (TypeError, ValueError):
        return _column(values, dtype or "float32")


def _spec(specs, name, key):
    for s in specs:
        if s["name"] == name:
            return s.get(key)
    return None


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


# -- running -------------------------------------------------------------------------------
def make_interpreter(model_path: str, num_threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RunnerError("the LiteRT interpreter is missing: pip install ai-edge-litert numpy") \
            from None
    return Interpreter(model_path=model_path, num_threads=num_threads)


class Model:
    """A kflow .tflite file with its metadata: raw rows in, predictions out."""

    def __init__(self, model_path: str, metadata_path: str | None = None, num_threads: int = 1):
        if not os.path.isfile(model_path):
            raise RunnerError(f"model file '{model_path}' does not exist")
        self.path = model_path
        self.metadata = load_metadata(model_path, metadata_path)
        self.sidecar = load_preprocessing(self.metadata)
        self.interpreter = make_interpreter(model_path, num_threads)
        self.interpreter.allocate_tensors()
        self.runner = self.interpreter.get_signature_runner(SIGNATURE_KEY)
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()
        self.inputs = _raw_inputs(self.metadata, self.input_details)
        self.output = self.metadata.get("output") or next(iter(self.output_details))
        self.task = self.metadata.get("task")
        self.class_names = self.metadata.get("class_names")

    def model_feed(self, raw: dict) -> dict:
        """Raw input arrays -> the interpreter's inputs (sidecar applied)."""
        if self.sidecar is not None:
            return apply_sidecar(self.sidecar, raw)
        return {(s.get("tflite_name") or s["name"]): raw[s["name"]] for s in self.inputs}

    def _quantize(self, name, x):
        d = self.input_details[name]
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu" and d["quantization"][0]:
            scale, zero = d["quantization"]
            info = np.iinfo(dtype)
            q = np.round(np.asarray(x, "float32") / scale + zero)
            return np.clip(q, info.min, info.max).astype(dtype)
        if dtype.kind in "SUO":
            return np.asarray(x)
        return np.asarray(x).astype(dtype)

    def _dequantize(self, name, y):
        d = self.output_details[name]
        if np.dtype(d["dtype"]).kind in "iu" and d["quantization"][0]:
            scale, zero = d["quantization"]
            return (y.astype("float32") - zero) * scale
        return y

    def invoke(self, feed: dict) -> np.ndarray:
        """One interpreter call on a batch; the dequantized head output."""
        out = self.runner(**{k: self._quantize(k, v) for k, v in feed.items()})
        return self._dequantize(self.output, np.asarray(out[self.output]))

    def head(self, raw: dict, batch_size: int = 1) -> np.ndarray:
        feed = self.model_feed(raw)
        n = len(next(iter(feed.values())))
        parts = [self.invoke({k: v[i:i + batch_size] for k, v in feed.items()})
                 for i in range(0, n, batch_size)]
        return np.concatenate(parts, axis=0)

    def predictions(self, head: np.ndarray) -> list[dict]:
        """Head outputs -> one dict per row (class id and name, probabilities, or value)."""
        rows = []
        head = np.asarray(head, dtype="float32")
        if self.task == "regression":
            for h in head:
                v = [float(x) for x in np.ravel(h)]
                rows.append({"value": v[0] if len(v) == 1 else v})
            return rows
        if self.task == "binary" or (self.task is None and head.shape[-1] == 1):
            threshold = self.metadata.get("binary_threshold") or 0.5
            p = head[:, -1] if head.shape[-1] <= 2 else head[:, 1]
            probs = np.stack([1.0 - p, p], axis=-1)
            ids = (p > threshold).astype("int64")
        else:
            probs, ids = head, np.argmax(head, axis=-1)
        for i, cid in enumerate(ids):
            row = {"class_id": int(cid), "probabilities": [float(x) for x in probs[i]]}
            if self.class_names:
                row["class_name"] = str(self.class_names[int(cid)])
            rows.append(row)
        return rows


def random_feed(model: Model, rng) -> dict:
    """One made-up row per interpreter input (for --benchmark without --input)."""
    feed = {}
    for name, d in model.input_details.items():
        shape = [1, *[max(int(s), 1) for s in d["shape_signature"][1:]]]
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "SUO":
            feed[name] = np.full(shape, "", dtype=object)
        elif dtype.kind in "iu" and not d["quantization"][0]:
            feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            feed[name] = rng.normal(size=shape).astype("float32")
    return feed


def benchmark(model: Model, raw: dict | None, runs: int, warmup: int) -> dict:
    """Latency of one-row invocations: percentiles in milliseconds, and the model size."""
    rng = np.random.default_rng(0)
    if raw is not None:
        feed = model.model_feed(raw)
        n = len(next(iter(feed.values())))
        rows = [{k: v[i % n:i % n + 1] for k, v in feed.items()} for i in range(max(n, 1))]
    else:
        rows = [random_feed(model, rng)]
    for i in range(warmup):
        model.invoke(rows[i % len(rows)])
    times = []
    for i in range(runs):
        row = rows[i % len(rows)]
        start = time.perf_counter()
        model.invoke(row)
        times.append((time.perf_counter() - start) * 1000.0)
    t = np.asarray(times)
    return {
        "model": os.path.basename(model.path), "size_bytes": os.path.getsize(model.path),
        "runs": runs, "mean_ms": float(t.mean()), "p50_ms": float(np.percentile(t, 50)),
        "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
        "throughput_per_s": float(1000.0 / t.mean()) if t.mean() > 0 else math.inf,
        "inputs": "file rows" if raw is not None else "random rows",
    }


# -- command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kflow_tflite_runner.py",
        description="Run a kflow .tflite model with LiteRT and NumPy only.",
        epilog="Inputs: .npy, .npz, .csv (header row) or .json (rows or TF Serving style).")
    p.add_argument("model", help="the .tflite file (metadata.json is read from its folder)")
    p.add_argument("--input", "-i", help="rows to predict (.npy/.npz/.csv/.json)")
    p.add_argument("--metadata", help="metadata.json or labels.json (default: beside the model)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table",
                   help="how to print predictions (default: table)")
    p.add_argument("--top", type=int, default=1, help="classes shown per row in the table")
    p.add_argument("--batch-size", type=int, default=1, help="rows per interpreter call")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--benchmark", action="store_true",
                   help="time one-row invocations: p50/p90/p99 latency and model size")
    p.add_argument("--runs", type=int, default=200, help="timed runs for --benchmark")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs for --benchmark")
    return p


def _print_table(preds: list[dict], task: str | None, top: int, class_names) -> None:
    for i, row in enumerate(preds):
        if "value" in row:
            print(f"{i}\t{row['value']}")
            continue
        probs = np.asarray(row["probabilities"])
        order = np.argsort(-probs)[:max(top, 1)]
        parts = []
        for j in order:
            label = str(class_names[j]) if class_names else str(j)
            parts.append(f"{label} ({probs[j]:.4f})")
        print(f"{i}\t" + "\t".join(parts))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = Model(args.model, args.metadata, args.threads)
        raw = read_inputs(args.input, model.inputs) if args.input else None
        if args.benchmark:
            result = benchmark(model, raw, args.runs, args.warmup)
            if args.format == "json":
                print(json.dumps(result))
            else:
                print(f"model: {result['model']} ({result['size_bytes'] / 1024:.1f} KiB)")
                print(f"runs: {result['runs']} one-row invocations ({result['inputs']})")
                print(f"latency ms: mean {result['mean_ms']:.4f}  p50 {result['p50_ms']:.4f}  "
                      f"p90 {result['p90_ms']:.4f}  p99 {result['p99_ms']:.4f}")
                print(f"throughput: {result['throughput_per_s']:.0f} rows/s")
            return 0
        if raw is None:
            raise RunnerError("give --input FILE to predict, or --benchmark")
        preds = model.predictions(model.head(raw, args.batch_size))
        if args.format == "json":
            print(json.dumps({"model": os.path.basename(args.model), "predictions": preds}))
        elif args.format == "csv":
            writer = csv.writer(sys.stdout)
            if preds and "value" in preds[0]:
                writer.writerow(["row", "value"])
                writer.writerows([i, p["value"]] for i, p in enumerate(preds))
            else:
                writer.writerow(["row", "class_id", "class_name", "probability"])
                writer.writerows([i, p["class_id"], p.get("class_name", ""),
                                  max(p["probabilities"])] for i, p in enumerate(preds))
        else:
            _print_table(preds, model.task, args.top, model.class_names)
        return 0
    except RunnerError as exc:
        print(f"kflow_tflite_runner: error: {exc}", file=sys.stderr)
        return 2


def _main_quiet_on_closed_pipe() -> int:
    """`main()`, exiting quietly when the reader of stdout went away (`... | head`)."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python would print an error when flushing stdout at exit; point it at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(_main_quiet_on_closed_pipe())
