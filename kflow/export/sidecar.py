"""Moving a model's input preprocessing into a JSON sidecar for TFLite.

Some preprocessing cannot go through the TFLite converter (NaN tests of an
`Impute` layer, string ops). `plan_sidecar` finds every tensor computable
from the raw inputs by preprocessing layers alone (Impute, Normalization,
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


def _model_nodes(model: Any) -> list[Any]:
    """The model's nodes, inputs first (topological order)."""
    by_depth = model._nodes_by_depth
    return [n for d in sorted(by_depth, reverse=True) for n in by_depth[d]]


def _raw_inputs(model: Any) -> dict[str, Any]:
    struct = model.input
    if isinstance(struct, dict):
        return {str(k): t for k, t in struct.items()}
    if isinstance(struct, (list, tuple)):
        return {t.name: t for t in struct}
    return {struct.name: struct}


def plan_sidecar(model: Any) -> SidecarPlan:
    """Finds the preprocessing computable from the raw inputs, and where to cut.

    Raises:
        TFLiteConversionError: A string tensor would cross into the numeric
            part (its consumer has no sidecar equivalent), or nothing is left
            for the numeric part.
    """
    plan = SidecarPlan()
    names: dict[int, str] = {}
    tensors: dict[int, Any] = {}
    for name, t in _raw_inputs(model).items():
        names[id(t)], tensors[id(t)] = name, t
    moved_nodes = set()
    nodes = _model_nodes(model)
    for node in nodes:
        if node.is_input or not node.operation:
            continue
        ins = list(node.input_tensors)
        if not ins or len(node.outputs) != 1 or any(id(x) not in names for x in ins):
            continue
        step = _step_for(node.operation)
        if step is None:
            continue
        out_name = node.operation.name
        while out_name in names.values():
            out_name += "_"
        step = {**step, "inputs": [names[id(x)] for x in ins], "output": out_name,
                "layer": type(node.operation).__name__}
        plan.steps.append(step)
        plan.moved.append(node.operation.name)
        moved_nodes.add(id(node))
        out = node.outputs[0]
        names[id(out)], tensors[id(out)] = out_name, out
    # The frontier: computable tensors consumed by layers that stay in the model.
    frontier_ids: list[int] = []
    for node in nodes:
        if node.is_input or id(node) in moved_nodes or not node.operation:
            continue
        for x in node.input_tensors:
            if id(x) in names and id(x) not in frontier_ids:
                if "string" in str(x.dtype):
                    raise TFLiteConversionError(
                        f"Cannot move the preprocessing of model '{model.name}' into a "
                        f"sidecar: string tensor '{names[id(x)]}' feeds layer "
                        f"'{node.operation.name}' ({type(node.operation).__name__}), which "
                        "has no sidecar equivalent (supported: Impute, Normalization, "
                        "Rescaling, StringLookup, IntegerLookup, CategoryEncoding, "
                        "Discretization, Concatenate, Identity)."
                    )
                frontier_ids.append(id(x))
    if any(id(o) in names for o in model.outputs):
        raise TFLiteConversionError(
            f"Model '{model.name}' is preprocessing only; there is no numeric part to export."
        )
    taken: set[str] = set()
    for i in frontier_ids:
        key = signature_name(names[i], taken)
        plan.frontier[key] = tensors[i]
        plan.sources[key] = names[i]
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
