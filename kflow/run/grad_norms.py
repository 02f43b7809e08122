"""`grad_norms.csv`: its columns, and a reader that needs no TensorFlow."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.run.layout import GRAD_NORMS

__all__ = ["GRAD_NORMS_COLUMNS", "TOTAL", "GradRows", "read_grad_norms"]

#: Columns of `grad_norms.csv`.
GRAD_NORMS_COLUMNS = ["step", "epoch", "layer", "kind", "grad_norm", "weight_norm",
                      "update_ratio"]
#: The `layer` value of the rows holding whole-model figures.
TOTAL = "total"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class GradRows:
    """`grad_norms.csv` by layer, in the order the layers were logged (input first).

    Attributes:
        layers: Layer names in logged order (without `total`).
        kinds: Layer class names, by layer.
        steps: `{layer: [step, ...]}` (and `total`).
        epochs: `{layer: [epoch, ...]}` as in the file: 1-based, as in
            history.csv (files of runs made before kflow counted from 1
            hold 0-based epochs, with a row in epoch 0).
        grad: `{layer: [grad_norm, ...]}`.
        weight: `{layer: [weight_norm, ...]}`.
        ratio: `{layer: [update_ratio, ...]}`.
    """

    layers: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)
    epochs: dict[str, list[int]] = field(default_factory=dict)
    grad: dict[str, list[float]] = field(default_factory=dict)
    weight: dict[str, list[float]] = field(default_factory=dict)
    ratio: dict[str, list[float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def add(self, row: dict[str, Any]) -> None:
        """Adds one row (a dict with the `grad_norms.csv` columns)."""
        layer = str(row["layer"])
        if layer not in self.steps:
            self.steps[layer], self.epochs[layer] = [], []
            self.grad[layer], self.weight[layer], self.ratio[layer] = [], [], []
            if layer != TOTAL:
                self.layers.append(layer)
                self.kinds[layer] = str(row.get("kind") or "")
        self.steps[layer].append(int(_float(row["step"])))
        self.epochs[layer].append(int(_float(row.get("epoch", 0))))
        self.grad[layer].append(_float(row["grad_norm"]))
        self.weight[layer].append(_float(row.get("weight_norm")))
        self.ratio[layer].append(_float(row.get("update_ratio")))


def read_grad_norms(path: str | Path) -> GradRows:
    """Reads a `grad_norms.csv` (a file, or a run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / GRAD_NORMS
    rows = GradRows()
    if not path.is_file():
        return rows
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("layer"):
                rows.add(row)
    return rows
