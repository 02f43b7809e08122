"""`Run`: what a finished training leaves behind, in memory and on disk."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.errors import RunError
from kflow.train.run_dir import RunDir

__all__ = ["Run", "load_run", "read_history"]


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Reads a `history.csv` into `{column: [values per epoch]}`."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open() as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


@dataclass
class Run:
    """The result of `kflow.train`.

    Attributes:
        run_dir: The run directory.
        model: The trained Keras model (best weights when early stopping).
        history: Per-epoch logs, `{"loss": [...], "val_loss": [...], ...}`.
        metrics: Final metrics, `{"train": {...}, "val": {...}, "test": {...}, ...}`.
        config: The resolved configuration written to `config.yaml`.
        info: Data facts (task, class names, feature names, input shape).
    """

    run_dir: Path
    model: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float | None:
        return (self.metrics.get("test") or {}).get("accuracy")

    def __repr__(self) -> str:
        return f"Run('{self.run_dir}', test={self.metrics.get('test')})"


def load_run(path: str | Path, *, load_model: bool = True) -> Run:
    """Loads a finished run directory.

    Args:
        path: The run directory.
        load_model: Also load `model.keras`. Defaults to `True`.
    """
    import yaml

    rd = RunDir(path)
    if not rd.path.is_dir():
        raise RunError(f"Run directory '{path}' does not exist.")
    if not rd.model.is_file():
        raise RunError(
            f"Run directory '{path}' has no model.keras: the run did not finish. "
            "Re-run its training command to resume it."
        )
    model = None
    if load_model:
        import keras

        from kflow.blocks import register_custom_objects
        from kflow.insight.insight_model import custom_objects as insight_objects

        model = keras.models.load_model(
            rd.model, custom_objects={**register_custom_objects(), **insight_objects()})
    info_file = rd.path / "run.json"
    return Run(
        run_dir=rd.path,
        model=model,
        history=read_history(rd.history),
        metrics=json.loads(rd.metrics.read_text()) if rd.metrics.is_file() else {},
        config=yaml.safe_load(rd.config.read_text()) if rd.config.is_file() else {},
        info=json.loads(info_file.read_text()) if info_file.is_file() else {},
    )
