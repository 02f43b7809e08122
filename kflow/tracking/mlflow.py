"""Logs kflow runs to MLflow (`--track mlflow`; `pip install kflow[mlflow]`).

Where: `MLFLOW_TRACKING_URI` when set (a server, `sqlite:///mlflow.db`,
`file:/path/mlruns`...), else the local folder `./mlruns` (MLflow's file
store, which MLflow 3 keeps in maintenance mode: kflow sets
`MLFLOW_ALLOW_FILE_STORE=true` for that default only). The experiment is
`MLFLOW_EXPERIMENT_NAME`, else "kflow".

What: one MLflow run per kflow run, named like its run directory, with

- params: the resolved `config.yaml`, flattened (`optimizer.learning_rate`),
- metrics: every column of `history.csv` at step = epoch (1-based), then
  `test_<metric>` / `val_<metric>` / `train_<metric>` and the baselines'
  test scores (`baseline_<model>_<metric>`),
- artifacts: `model/model.keras`, `report.html`, `metrics.json`, `config.yaml`,
- tags: `kflow.run_dir`, `kflow.recipe`.

The run is logged once the run directory is complete (so a resumed run is
logged once, with its whole history). Runs of `kflow tune --track mlflow`
are nested under one parent run per tuning.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["log_run_dir", "parent_run", "setup", "flatten"]

DEFAULT_EXPERIMENT = "kflow"


def setup() -> Any:
    """Imports MLflow and points it at the tracking URI and experiment (see the module doc)."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(Path("mlruns").resolve().as_uri())
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    return mlflow


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"optimizer": {"learning_rate": 0.1}}` -> `{"optimizer.learning_rate": "0.1"}`."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


@contextlib.contextmanager
def parent_run(name: str, params: Mapping[str, Any]) -> Iterator[Any]:
    """An MLflow run that the runs logged inside it are nested under."""
    mlflow = setup()
    with mlflow.start_run(run_name=name) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log_run_dir(run_dir: str | Path) -> str:
    """Logs a finished run directory to MLflow (nested under an active run, if any).

    Args:
        run_dir: A run directory `kflow train` wrote.

    Returns:
        The MLflow run id.
    """
    from kflow.run import RunDir, read_history, read_run

    rd = RunDir(run_dir)
    run = read_run(rd.path)
    mlflow = setup()
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=rd.path.name, nested=nested) as active:
        config = dict(run.config or {})
        mlflow.set_tags({"kflow.run_dir": str(rd.path.resolve()),
                         "kflow.recipe": str(config.get("recipe", ""))})
        mlflow.log_params(flatten(config))
        history = read_history(rd.history) if rd.history.is_file() else {}
        epochs = [int(e) for e in history.pop("epoch", [])] or list(
            range(1, len(next(iter(history.values()), [])) + 1))
        for i, epoch in enumerate(epochs):
            values = {k: float(v[i]) for k, v in history.items()
                      if i < len(v) and _finite(v[i])}
            if values:
                mlflow.log_metrics(values, step=epoch)
        metrics = run.metrics or {}
        final: dict[str, float] = {}
        for part in ("train", "val", "test"):
            for k, v in (metrics.get(part) or {}).items():
                if _finite(v):
                    final[f"{part}_{k}"] = float(v)
        for model, scores in (metrics.get("baselines") or {}).items():
            for k, v in (scores.get("test") or {}).items():
                if _finite(v):
                    final[f"baseline_{model}_{k}"] = float(v)
        if final:
            mlflow.log_metrics(final)
        if rd.model.is_file():
            mlflow.log_artifact(str(rd.model), artifact_path="model")
        for path in (rd.report, rd.metrics, rd.config):
            if path.is_file():
                mlflow.log_artifact(str(path))
        return active.info.run_id
