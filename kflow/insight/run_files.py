"""The files `kflow.insight` adds to a run directory, and readers for them.

| file                    | written by                 | content                                  |
|-------------------------|----------------------------|------------------------------------------|
| `grad_norms.csv`        | `GradientNormLogger`       | per logged step and layer: norms, ratio  |
| `findings.json`         | `kflow.insight.doctor`     | the doctor's findings                    |
| `confusion_matrix.json` | end of `kflow.train`       | test-split confusion matrix (classifiers)|
| `report.html`           | `kflow.insight.report`     | the self-contained HTML report           |

Readers take a run directory and return plain Python data, so the doctor,
the report and `kflow compare` never need TensorFlow.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "GRAD_NORMS", "FINDINGS", "CONFUSION", "REPORT", "GRAD_NORMS_COLUMNS", "TOTAL",
    "GradRows", "read_grad_norms", "RunFiles", "read_run_files",
]

GRAD_NORMS = "grad_norms.csv"
FINDINGS = "findings.json"
CONFUSION = "confusion_matrix.json"
REPORT = "report.html"
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
        epochs: `{layer: [epoch, ...]}` (0-based, as in history.csv).
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


@dataclass
class RunFiles:
    """What a run directory holds, read without TensorFlow.

    Attributes:
        path: The run directory.
        config: `config.yaml`.
        info: `run.json` (task, class names, steps per epoch...).
        history: `history.csv` as `{column: [values per epoch]}`.
        metrics: `metrics.json`.
        status: `status.json`.
        grads: `grad_norms.csv`.
        confusion: `confusion_matrix.json` (or `{}`).
    """

    path: Path
    config: dict[str, Any]
    info: dict[str, Any]
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    status: dict[str, Any]
    grads: GradRows
    confusion: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.config.get('recipe', '?')} ({self.path.name})"


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def read_run_files(path: str | Path) -> RunFiles:
    """Reads the files of a run directory (missing ones read as empty).

    Raises:
        RunError: When `path` is not a directory.
    """
    import yaml

    from kflow.errors import RunError
    from kflow.train.run import read_history

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"Run directory '{path}' does not exist.")
    config_file = path / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return RunFiles(
        path=path, config=config or {}, info=_json(path / "run.json"),
        history=read_history(path / "history.csv"), metrics=_json(path / "metrics.json"),
        status=_json(path / "status.json"), grads=read_grad_norms(path / GRAD_NORMS),
        confusion=_json(path / CONFUSION),
    )
