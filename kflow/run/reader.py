"""The one reader of a run directory: `read_run` (plain data) and `load_run` (+ model)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.run.grad_norms import GradRows, read_grad_norms
from kflow.run.layout import RunDir, read_json

__all__ = ["Run", "read_run", "load_run", "read_history", "read_config"]


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Reads a `history.csv` (a file, or a run directory) into `{column: [values]}`."""
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).history
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


def read_config(path: str | Path) -> dict[str, Any]:
    """A run's `config.yaml` as a dict (`{}` when missing)."""
    import yaml

    file = RunDir(path).config
    return (yaml.safe_load(file.read_text()) or {}) if file.is_file() else {}


@dataclass
class Run:
    """A run directory, in memory: what `kflow.train` returns and `load_run` reads.

    Attributes:
        run_dir: The run directory.
        model: The trained Keras model (`None` when not loaded).
        history: Per-epoch logs, `{"epoch": [1, 2, ...], "loss": [...], ...}`.
        metrics: Final metrics, `{"train": {...}, "val": {...}, "test": {...}, ...}`.
        config: The resolved configuration (`config.yaml`).
        info: Data facts (`run.json`: task, class names, feature names, sizes).
        status: `status.json` (`{"state": "finished", ...}`).
        grads: `grad_norms.csv` by layer.
        confusion: `confusion_matrix.json` (or `{}`).
    """

    run_dir: Path
    model: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    grads: GradRows = field(default_factory=GradRows)
    confusion: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.run_dir

    @property
    def files(self) -> RunDir:
        """The run's file layout."""
        return RunDir(self.run_dir)

    @property
    def label(self) -> str:
        return f"{self.config.get('recipe', '?')} ({self.run_dir.name})"

    @property
    def test_accuracy(self) -> float | None:
        return (self.metrics.get("test") or {}).get("accuracy")

    def __repr__(self) -> str:
        return f"Run('{self.run_dir}', test={self.metrics.get('test')})"


def read_run(path: str | Path) -> Run:
    """Reads a run directory's files, without TensorFlow (missing files read as empty).

    Args:
        path: The run directory.

    Raises:
        RunError: When `path` is not a kflow run directory.
    """
    rd = RunDir(path)
    rd.require_run()
    return Run(
        run_dir=rd.path, history=read_history(rd.history), metrics=read_json(rd.metrics),
        config=read_config(rd.path), info=read_json(rd.info), status=rd.status(),
        grads=read_grad_norms(rd.grad_norms), confusion=read_json(rd.confusion),
    )


def load_run(path: str | Path, *, load_model: bool = True) -> Run:
    """Loads a trained run directory, with its model.

    `model.keras` is a plain Keras model: `keras.saving.load_model` opens it
    without kflow, and so does this function.

    Args:
        path: The run directory.
        load_model: Also load `model.keras`. Defaults to `True`.

    Raises:
        RunError: When `path` is not a run directory, or training did not finish.

    Example:

    ```python
    run = kflow.load_run("runs/digits-cnn-1a2b3c4d")
    print(run.metrics["test"]["accuracy"], run.model.count_params())
    ```
    """
    rd = RunDir(path)
    rd.require_trained()
    run = read_run(path)
    if load_model:
        from kflow.run.model_file import load_model_file

        run.model = load_model_file(rd.model)
    return run
