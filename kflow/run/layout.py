"""The run directory's layout: every file name, and the run's state.

This module is the only place that spells a run file's name. Everything else
asks a `RunDir` (`rd.config`, `rd.report`, ...) or reads through
`kflow.run.read_run` / `kflow.run.load_run`.

| path                   | written by       | content                                   |
|------------------------|------------------|-------------------------------------------|
| `config.yaml`          | trainer, first   | resolved configuration (reproduces the run) |
| `run.json`             | trainer          | data facts: task, classes, features, sizes |
| `samples.npz`          | trainer          | test and training rows export checks on   |
| `status.json`          | trainer          | running / interrupted / failed / finished |
| `history.csv`          | HistoryCSV       | one row per epoch (`epoch` counts from 1) |
| `grad_norms.csv`       | grad-norm logger | per logged step and layer: norms, ratio   |
| `backup/`              | backup callback  | resume state; removed once finished       |
| `backup/fine_tune/`    | trainer          | transfer runs: the fine-tuning phase's state |
| `checkpoints/best.keras` | checkpoint     | the best epoch's model (plain Keras)      |
| `tensorboard/`         | TensorBoard      | event files                               |
| `model.keras`          | trainer          | the final model (plain Keras)             |
| `metrics.json`         | trainer          | train/val/test metrics, stop reason       |
| `confusion_matrix.json`| trainer          | test confusion matrix (classifiers)       |
| `findings.json`        | the doctor       | the doctor's findings                     |
| `report.html`          | the report       | self-contained HTML report                |
| `export/`              | `kflow export`   | TFLite files, metadata, export reports    |
| `cv.json`, `cv.csv`    | `kflow cv`       | per-fold and mean ± std metrics           |

A run is *finished* when `status.json` says so; that marker is written last,
after every other file. Until then `backup/` is kept, and re-running the
same command resumes training or completes the missing files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from kflow.errors import RunError
from kflow.run.atomic import atomic_write_text

__all__ = ["RunDir", "TuneDir", "config_hash", "json_default"]

# File and folder names, relative to the run directory.
CONFIG = "config.yaml"
INFO = "run.json"
STATUS = "status.json"
HISTORY = "history.csv"
GRAD_NORMS = "grad_norms.csv"
BACKUP = "backup"
FINE_TUNE_BACKUP = "fine_tune"
CHECKPOINTS = "checkpoints"
BEST = "best.keras"
TENSORBOARD = "tensorboard"
MODEL = "model.keras"
METRICS = "metrics.json"
CONFUSION = "confusion_matrix.json"
FINDINGS = "findings.json"
REPORT = "report.html"
EXPORT = "export"
CV_JSON = "cv.json"
CV_CSV = "cv.csv"
SAMPLES = "samples.npz"
EXPORT_JSON = "export.json"
EXPORT_HTML = "export.html"
EXPORT_SECTION = "report_section.html"
FINISHED = "finished"


# A tuning directory (`kflow tune`): trials are run directories under trials/<id>/.
TUNE_SETTINGS = "tune_config.json"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
CHIEF = "chief.json"
TRIALS = "trials"
TRIAL = "trial.json"


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a configuration (names default run directories)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:8]


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for NumPy scalars and arrays and paths."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


class RunDir:
    """Paths and state of one run directory (the layout is in this module's docstring).

    Args:
        path: The run directory (need not exist yet).

    Example:

    ```python
    rd = RunDir("runs/digits-cnn-1a2b3c4d")
    if rd.finished:
        print(rd.metrics.read_text())
    ```
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    info = property(lambda self: self.path / INFO)
    status_file = property(lambda self: self.path / STATUS)
    history = property(lambda self: self.path / HISTORY)
    grad_norms = property(lambda self: self.path / GRAD_NORMS)
    backup = property(lambda self: self.path / BACKUP)
    #: The fine-tuning phase's backup of a transfer run (its optimizer differs).
    fine_tune_backup = property(lambda self: self.path / BACKUP / FINE_TUNE_BACKUP)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    best_checkpoint = property(lambda self: self.path / CHECKPOINTS / BEST)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    model = property(lambda self: self.path / MODEL)
    metrics = property(lambda self: self.path / METRICS)
    confusion = property(lambda self: self.path / CONFUSION)
    findings = property(lambda self: self.path / FINDINGS)
    report = property(lambda self: self.path / REPORT)
    export = property(lambda self: self.path / EXPORT)
    cv_json = property(lambda self: self.path / CV_JSON)
    cv_csv = property(lambda self: self.path / CV_CSV)
    samples = property(lambda self: self.path / SAMPLES)
    export_json = property(lambda self: self.path / EXPORT / EXPORT_JSON)
    export_html = property(lambda self: self.path / EXPORT / EXPORT_HTML)
    #: The export's HTML section, which `report.html` includes on every render.
    export_section = property(lambda self: self.path / EXPORT / EXPORT_SECTION)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    # -- state ----------------------------------------------------------------
    @property
    def is_run(self) -> bool:
        """Whether the folder holds a kflow run (finished or not)."""
        return self.config.is_file() or self.info.is_file() or self.status_file.is_file()

    @property
    def trained(self) -> bool:
        """Training is over: the final model and metrics exist (files may still be missing)."""
        return self.metrics.is_file() and self.model.is_file()

    @property
    def finished(self) -> bool:
        """The run is complete: the finished marker, written last, is there."""
        return self.trained and self.status().get("state") == FINISHED

    @property
    def resumable(self) -> bool:
        """Unfinished, with something to continue from (a backup, or a trained model)."""
        if self.finished:
            return False
        return any(self.backup.glob("*.npz")) or self.trained

    def status(self) -> dict[str, Any]:
        """`status.json` as a dict (`{}` when missing or unreadable)."""
        return read_json(self.status_file)

    def write_status(self, state: str, **extra: Any) -> None:
        self.write_json(self.status_file, {"state": state, **extra})

    def mark_finished(self, **extra: Any) -> None:
        """Writes the finished marker (call last), then drops the resume state."""
        self.write_status(FINISHED, **extra)
        shutil.rmtree(self.backup, ignore_errors=True)

    def _file(self, path: Path | str) -> Path:
        """`path` as given (e.g. `rd.metrics`), or a bare file name inside the run."""
        path = Path(path)
        return self.path / path if path.parent == Path(".") else path

    def write_json(self, path: Path | str, data: Any) -> None:
        """Writes `data` as JSON to `path` (e.g. `rd.metrics`) atomically."""
        atomic_write_text(self._file(path),
                          json.dumps(data, indent=2, default=json_default) + "\n")

    def write_text(self, path: Path | str, text: str) -> None:
        """Writes `text` to `path` (e.g. `rd.report`) atomically."""
        atomic_write_text(self._file(path), text)

    def read_json(self, path: Path | str) -> dict[str, Any]:
        return read_json(self._file(path))

    # -- choosing a run directory -----------------------------------------------
    @classmethod
    def choose(cls, root: str | Path, stem: str) -> tuple[RunDir, bool]:
        """Picks `root/stem`, `root/stem-2`, ...: the first unfinished run to resume,
        or the first free name. Returns the run dir and whether it resumes."""
        root = Path(root)
        for i in range(1, 10_000):
            candidate = cls(root / (stem if i == 1 else f"{stem}-{i}"))
            if not candidate.path.exists():
                return candidate, False
            if not candidate.finished:  # unfinished: resume it, or reuse it if no progress
                return candidate, candidate.resumable
        raise RunError(f"Too many runs named {stem} under {root}.")

    @classmethod
    def explicit(cls, path: str | Path, overwrite: bool = False) -> tuple[RunDir, bool]:
        """Uses `path` as given: resumes an unfinished run, refuses a finished one."""
        run = cls(path)
        if run.finished and not overwrite:
            raise RunError(
                f"Run directory '{path}' already holds a finished run; choose another "
                "--run-dir or pass --overwrite to replace it."
            )
        if run.finished and overwrite:
            shutil.rmtree(run.path)
        return run, run.resumable

    def require_run(self) -> None:
        """Raises a RunError unless the folder is a kflow run directory."""
        if not self.path.is_dir():
            raise RunError(f"Run directory '{self.path}' does not exist.")
        if not self.is_run:
            raise RunError(
                f"'{self.path}' is not a kflow run directory (it has no {CONFIG}, {INFO} "
                f"or {STATUS}). Pass a folder that `kflow train` created, e.g. runs/NAME-HASH."
            )

    def require_trained(self) -> None:
        """Raises a RunError unless the run has its final model and metrics."""
        self.require_run()
        if not self.trained:
            raise RunError(
                f"Run directory '{self.path}' has no {MODEL}: the run did not finish. "
                "Re-run its training command to resume it."
            )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict; `{}` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return {}


class TuneDir:
    """Paths of a tuning directory (`kflow tune`): each trial is a run directory.

    Layout: `tune_config.json` (the search's settings, to resume it),
    `trials.csv`, `report.html`, `best.yaml`, `chief.json` (a distributed
    search's oracle address), `trials/<id>/` (a run directory plus `trial.json`).

    Args:
        path: The tuning directory.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    settings = property(lambda self: self.path / TUNE_SETTINGS)
    trials_csv = property(lambda self: self.path / TRIALS_CSV)
    report = property(lambda self: self.path / REPORT)
    best_yaml = property(lambda self: self.path / BEST_YAML)
    chief = property(lambda self: self.path / CHIEF)
    trials = property(lambda self: self.path / TRIALS)

    def trial(self, trial_id: str) -> Path:
        """A trial's run directory."""
        return self.path / TRIALS / str(trial_id)

    @staticmethod
    def trial_json(trial_dir: str | Path) -> Path:
        """The outcome file of a trial's run directory."""
        return Path(trial_dir) / TRIAL
