"""Moving a model's input preprocessing into a JSON sidecar for TFLite.

Some preprocessing cannot go through the TFLite converter (NaN tests of
imputation, string ops). `plan_sidecar` finds every tensor computable
from the raw inputs by preprocessing alone (imputation: `keras.ops.where`
nodes from `kflow.data.impute.impute` or the `Impute` layer; Normalization,
Rescaling, StringLookup / IntegerLookup, CategoryEncoding, Discretization,
Concatenate, Identity: no trainable weights), `numeric_model` cuts the model
there, and `sidecar_spec` writes the cut-off part as data: vocabularies,
means and variances, fill values. `apply_sidecar` runs it with NumPy; the
on-device runner (`tflite/kflow_tflite_runner.py`) carries its own copy of
that function, and the tests check the two agree.

The sidecar format (`preprocessing.json`):

```
{"format": "kflow-preprocessing", "version": 1,
 "inputs": {"age": {"dtype": "float32", "shape": [null, 1]}, ...},
 "steps": [{"op": "impute", "inputs": ["age"], "output": "age_impute",
            "fill_value": [38.5]}, ...],
 "outputs": {"preprocessed": {"from": "preprocessed", "dtype": "float32",
                              "shape": [null, 12]}}}
```
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kflow.export.errors import TFLiteConversionError
from kflow.export.layout import signature_name

__all__ = [
    "SIDECAR_FILE",
    "SidecarPlan",
    "plan_sidecar",
    "numeric_model",
    "sidecar_spec",
    "apply_sidecar",
    "preprocessing_layer_names",
]

SIDECAR_FILE = "preprocessing.json"
SIDECAR_FORMAT = "kflow-preprocessing"
_ENCODE_MODES = ("int", "one_hot", "multi_hot", "count")


@dataclass
class SidecarPlan:
    """Where a model is cut: the moved steps and the numeric part's inputs.

    Attributes:
        steps: Sidecar steps in execution order (JSON-ready dicts).
        frontier: `{numeric input name: KerasTensor}`: the tensors the numeric
            part takes.
        sources: `{numeric input name: sidecar tensor name}`.
        moved: Names of the layers moved into the sidecar.
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    frontier: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    moved: list[str] = field(default_factory=list)


def _values(v: Any) -> Any:
    a = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    return a.astype("float64").tolist()


def _lookup_step(layer: Any) -> dict[str, Any] | None:
    cfg = layer.get_config()
    mode = cfg.get("output_mode", "int")
    if (cfg.get("invert") or cfg.get("sparse") or mode not in _ENCODE_MODES
            or cfg.get("num_oov_indices", 1) > 1
            or (cfg.get("mask_token") is not None and mode != "int")):
        return None
    vocab = layer.get_vocabulary(include_special_tokens=True)
    is_string = type(layer).__name__ == "StringLookup"
    vocab = [str(v) if is_string else int(v) for v in vocab]
    has_mask = cfg.get("mask_token") is not None
    oov = (1 if has_mask else 0) if cfg.get("num_oov_indices", 1) == 1 else None
    return {"op": "lookup", "vocabulary": vocab, "oov_index": oov,
            "mask_token": cfg.get("mask_token"), "output_mode": mode,
            "depth": len(vocab)}


def _step_for(layer: Any) -> dict[str, Any] | None:
    """The sidecar step equivalent to a preprocessing layer, or `None`."""
    kind = type(layer).__name__
    if kind == "Concatenate":
        return {"op": "concat", "axis": int(layer.axis)}
    if kind == "Identity":
        return {"op": "identity"}
    if kind == "Impute" and hasattr(layer, "fill_value"):
        return {"op": "impute", "fill_value": layer.fill_value}
    if kind == "Normalization" and not getattr(layer, "invert", False):
        if getattr(layer, "mean", None) is None:
            return None
        import keras

        return {"op": "normalize", "mean": _values(layer.mean),
                "variance": _values(layer.variance), "epsilon": float(keras.config.epsilon())}
    if kind == "Rescaling":
        return {"op": "rescale", "scale": _values(layer.scale), "offset": _values(layer.offset)}
    if kind in ("StringLookup", "IntegerLookup"):
        return _lookup_step(layer)
    if kind == "TextVectorization":
        cfg = layer.get_config()
        if (cfg.get("split") != "whitespace" or cfg.get("ngrams") or cfg.get("output_mode") != "int"
                or not cfg.get("output_sequence_length") or cfg.get("ragged")
                or cfg.get("standardize") not in ("lower_and_strip_punctuation", "lower",
                                                  "strip_punctuation", None)):
            return None
        return {"op": "tokenize", "vocabulary": [str(v) for v in layer.get_vocabulary()],
                "standardize": cfg.get("standardize"),
                "sequence_length": int(cfg["output_sequence_length"])}
    if kind == "CategoryEncoding":
        mode = layer.output_mode
        if getattr(layer, "sparse", False) or mode not in _ENCODE_MODES[1:]:
            return None
        return {"op": "encode", "depth": int(layer.num_tokens), "output_mode": mode}
    if kind == "Discretization":
        bounds = getattr(layer, "bin_boundaries", None)
        mode = layer.output_mode
        if bounds is None or getattr(layer, "sparse", False) or mode not in _ENCODE_MODES:
            return None
        return {"op": "bucketize", "boundaries": [float(b) for b in bounds],
                "output_mode": mode, "depth": len(bounds) + 1}
    return None


Ref = tuple  # (layer name, node index, tensor index): a tensor in the model's config


def _refs(value: Any) -> list[Ref]:
    """The tensors (`keras_history` refs) in a serialized call argument, in order."""
    from kflow.data.impute import _is_ref, _ref

    if _is_ref(value):
        return [_ref(value)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs(v)]
    return []


def _dtypes(value: Any, out: dict[Ref, str]) -> None:
    from kflow.data.impute import _is_ref, _ref

    if _is_ref(value):
        out[_ref(value)] = str(value["config"].get("dtype"))
    elif isinstance(value, dict):
        for v in value.values():
            _dtypes(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _dtypes(v, out)


def _structure_refs(struct: Any) -> list[tuple[str | None, Ref]]:
    """`(dict key or None, ref)` of a config's `input_layers` / `output_layers`."""
    if isinstance(struct, dict):
        return [(str(k), r) for k, v in struct.items() for _, r in _structure_refs(v)]
    if (isinstance(struct, (list, tuple)) and len(struct) == 3 and isinstance(struct[0], str)
            and isinstance(struct[1], int)):
        return [(None, (struct[0], int(struct[1]), int(struct[2])))]
    if isinstance(struct, (list, tuple)):
        return [r for v in struct for r in _structure_refs(v)]
    return []


def _tensor(operations: dict[str, Any], ref: Ref) -> Any:
    """The KerasTensor of a ref (an operation used once in the model), or `None`."""
    import keras

    op = operations.get(ref[0])
    if op is None or ref[1] != 0:
        return None
    try:
        outputs = keras.tree.flatten(op.output)
    except (AttributeError, ValueError):  # used more than once
        return None
    return outputs[ref[2]] if ref[2] < len(outputs) else None


def _raw_inputs(model: Any) -> dict[str, Any]:
    struct = model.input
    if isinstance(struct, dict):
        return {str(k): t for k, t in struct.items()}
    if isinstance(struct, (list, tuple)):
        return {t.name: t for t in struct}
    return {struct.name: struct}


def plan_sidecar(model: Any) -> SidecarPlan:
    """Finds the preprocessing computable from the raw inputs, and where to cut.

    Walks the model's serialized graph (`model.get_config()`, the `.keras`
    format: public and versioned), so it needs no private Keras attribute.
    Imputation written as `kflow.data.impute.impute` (`where(isnan(x), fill,
    x)`) becomes an "impute" step like the `Impute` layer.

    Raises:
        TFLiteConversionError: A string tensor would cross into the numeric
            part (its consumer has no sidecar equivalent), or nothing is left
            for the numeric part.
    """
    from kflow.data.impute import find_imputations

    config = model.get_config()
    entries = config.get("layers", [])
    operations = {op.name: op for op in model.operations}
    imputations = find_imputations(config)
    masks = {info["mask"] for info in imputations.values()}
    dtypes: dict[Ref, str] = {}
    for entry in entries:
        _dtypes(entry.get("inbound_nodes", []), dtypes)

    plan = SidecarPlan()
    names: dict[Ref, str] = {}
    raw = _raw_inputs(model)
    for key, ref in _structure_refs(config.get("input_layers")):
        names[ref] = key if key is not None and key in raw else ref[0]
    moved: set[tuple[str, int]] = set()
    mask_refs: set[Ref] = set()
    for entry in entries:
        name = entry["name"]
        for i, node in enumerate(entry.get("inbound_nodes", [])):
            ins = _refs([node.get("args", []), node.get("kwargs", {})])
            if not ins or any(r not in names and r not in mask_refs for r in ins):
                continue
            out_ref = (name, i, 0)
            if name in masks and all(r in names for r in ins):
                mask_refs.add(out_ref)  # `isnan(x)`: part of an impute step
                moved.add((name, i))
                continue
            if name in imputations:
                source = imputations[name]["input"]
                step = {"op": "impute", "fill_value": imputations[name]["fill_value"]}
                ins, kind, out_name = [source], "keras.ops.where", f"{names[source]}_impute"
            else:
                op = operations.get(name)
                step = _step_for(op) if op is not None and i == 0 else None
                if step is None or any(r not in names for r in ins):
                    continue
                kind, out_name = type(op).__name__, name
            while out_name in names.values():
                out_name += "_"
            plan.steps.append({**step, "inputs": [names[r] for r in ins], "output": out_name,
                               "layer": kind})
            moved.add((name, i))
            names[out_ref] = out_name
    # The frontier: computable tensors consumed by operations that stay in the model.
    frontier: list[Ref] = []
    for entry in entries:
        for i, node in enumerate(entry.get("inbound_nodes", [])):
            if (entry["name"], i) in moved:
                continue
            for ref in _refs([node.get("args", []), node.get("kwargs", {})]):
                if ref in names and ref not in frontier:
                    if dtypes.get(ref) == "string":
                        raise TFLiteConversionError(
                            f"Cannot move the preprocessing of model '{model.name}' into a "
                            f"sidecar: string tensor '{names[ref]}' feeds layer "
                            f"'{entry['name']}' ({entry.get('class_name')}), which "
                            "has no sidecar equivalent (supported: Impute, Normalization, "
                            "TextVectorization, "
                            "Rescaling, StringLookup, IntegerLookup, CategoryEncoding, "
                            "Discretization, Concatenate, Identity, and keras.ops.where "
                            "imputation)."
                        )
                    frontier.append(ref)
    if any(ref in names for _, ref in _structure_refs(config.get("output_layers"))):
        raise TFLiteConversionError(
            f"Model '{model.name}' is preprocessing only; there is no numeric part to export."
        )
    taken: set[str] = set()
    for ref in frontier:
        tensor = _tensor(operations, ref)
        if tensor is None:
            raise TFLiteConversionError(
                f"Cannot cut model '{model.name}' at '{names[ref]}': layer '{ref[0]}' is "
                "used more than once, so its output is ambiguous.")
        key = signature_name(names[ref], taken)
        plan.frontier[key] = tensor
        plan.sources[key] = names[ref]
    # Keep only the steps the frontier needs.
    needed = set(plan.sources.values())
    kept = []
    for step in reversed(plan.steps):
        if step["output"] in needed:
            kept.append(step)
            needed.update(step["inputs"])
    plan.steps = kept[::-1]
    plan.moved = [s["output"] for s in plan.steps]
    return plan


def numeric_model(model: Any, plan: SidecarPlan) -> Any:
    """The part of `model` after the sidecar: `{numeric input name: tensor}` -> output."""
    import keras

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dict keys are not the cut tensors' names
        return keras.Model(plan.frontier, model.outputs[0], name=f"{model.name}_numeric")


def sidecar_spec(model: Any, plan: SidecarPlan) -> dict[str, Any]:
    """The JSON sidecar for a plan (see the module docstring)."""
    raw = _raw_inputs(model)
    used = {i for s in plan.steps for i in s["inputs"]} | set(plan.sources.values())
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "inputs": {name: {"dtype": str(t.dtype), "shape": [None, *t.shape[1:]]}
                   for name, t in raw.items() if name in used},
        "steps": plan.steps,
        "outputs": {key: {"from": plan.sources[key], "dtype": str(t.dtype),
                          "shape": [None, *t.shape[1:]]}
                    for key, t in plan.frontier.items()},
    }


def preprocessing_layer_names(model: Any) -> list[str]:
    """`name (Class)` of the layers a sidecar would take (for error messages)."""
    try:
        plan = plan_sidecar(model)
    except TFLiteConversionError:
        return []
    kinds = {s["output"]: s["layer"] for s in plan.steps}
    return [f"{n} ({kinds[n]})" for n in plan.moved]


# -- NumPy runtime (mirrored in tflite/kflow_tflite_runner.py) ------------------------
def _encode(idx: np.ndarray, depth: int, mode: str) -> np.ndarray:
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


def _as_text(a: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, dtype=object)
    for i, v in np.ndenumerate(a):
        out[i] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return out


def _step(step: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
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
                raise ValueError(f"value {k!r} is not in the vocabulary of "
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
    raise ValueError(f"unknown sidecar step op {op!r}")


def apply_sidecar(spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs the sidecar's steps on raw input arrays.

    Args:
        spec: The sidecar (as written to `preprocessing.json`).
        arrays: `{raw input name: array}`, shaped like the model's inputs
            (`(rows, 1)` per tabular column; `(rows,)` is reshaped).

    Returns:
        `{numeric input name: array}` in the numeric part's dtypes.
    """
    env: dict[str, np.ndarray] = {}
    for name, info in spec["inputs"].items():
        a = np.asarray(arrays[name])
        shape = info["shape"]
        if a.ndim == len(shape) - 1:
            a = a.reshape(*a.shape, 1) if shape[-1] == 1 else a
        env[name] = a if info["dtype"] == "string" else a.astype(info["dtype"])
    for step in spec["steps"]:
        env[step["output"]] = _step(step, [env[i] for i in step["inputs"]])
    return {key: np.asarray(env[out["from"]]).astype(out["dtype"])
            for key, out in spec["outputs"].items()}
