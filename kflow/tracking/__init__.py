"""Experiment tracking beside TensorBoard (the default): `--track mlflow`.

`kflow.tracking.mlflow` logs a finished run directory to MLflow: the resolved
config as params, every epoch of `history.csv` as metrics (step = epoch), the
test/val metrics and baseline scores, and `model.keras`, `report.html`,
`metrics.json` and `config.yaml` as artifacts. It is optional:
`pip install kflow[mlflow]`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kflow.errors import ConfigError

__all__ = ["TRACKERS", "check_tracker", "current_tracker", "tracking_parent", "log_run"]

TRACKERS = ("mlflow",)
_PARENT: list[str] = []


def check_tracker(name: str | None) -> str | None:
    """Validates a `--track` value: `None`/"none"/"tensorboard" -> `None`, "mlflow" -> "mlflow".

    Raises:
        ConfigError: For an unknown tracker, or "mlflow" when MLflow is not installed.
    """
    if name is None:
        return current_tracker()
    name = str(name).strip().lower()
    if name in ("", "none", "tensorboard"):
        return None
    if name not in TRACKERS:
        raise ConfigError(f"track must be one of: none, {', '.join(TRACKERS)}. Got {name!r}.")
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise ConfigError("--track mlflow needs MLflow: pip install 'kflow[mlflow]' "
                          "(or pip install mlflow-skinny).") from e
    return name


def current_tracker() -> str | None:
    """The tracker of an enclosing `tracking_parent` (e.g. `kflow tune --track mlflow`)."""
    return _PARENT[-1] if _PARENT else None


@contextlib.contextmanager
def tracking_parent(tracker: str | None, name: str, params: dict[str, Any] | None = None
                    ) -> Iterator[None]:
    """Runs started inside (each tuning trial's `kflow.train`) become nested runs of one parent.

    Args:
        tracker: "mlflow" or `None` (then this does nothing).
        name: The parent run's name.
        params: Params of the parent run. Defaults to `None`.
    """
    tracker = check_tracker(tracker) if tracker else None
    if tracker is None:
        yield
        return
    from kflow.tracking.mlflow import parent_run

    with parent_run(name, params or {}):
        _PARENT.append(tracker)
        try:
            yield
        finally:
            _PARENT.pop()


def log_run(tracker: str, run_dir: Any) -> str:
    """Logs a finished run directory to `tracker`; returns the tracker's run id."""
    from kflow.tracking.mlflow import log_run_dir

    return log_run_dir(run_dir)
