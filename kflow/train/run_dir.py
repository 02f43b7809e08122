"""The run directory: layout, atomic writes and run state."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kflow.errors import RunError

__all__ = ["RunDir", "atomic_write_text", "atomic_save", "config_hash"]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(path: str | Path, save: Callable[[str], Any]) -> None:
    """Calls `save(tmp_path)` then renames the result to `path`.

    `tmp_path` keeps the suffix of `path` (Keras checks `.keras`/`.weights.h5`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    tmp = path.parent / f".tmp-{os.getpid()}-{path.name.removesuffix(suffix)}{suffix}"
    try:
        save(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def config_hash(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:8]


class RunDir:
    """Paths and state of one run directory.

    Layout: `config.yaml`, `history.csv`, `metrics.json`, `model.keras`,
    `checkpoints/best.keras`, `backup/` (resume state, removed when the run
    finishes), `tensorboard/`, `status.json`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    history = property(lambda self: self.path / "history.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    model = property(lambda self: self.path / "model.keras")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best_checkpoint = property(lambda self: self.path / "checkpoints" / "best.keras")
    backup = property(lambda self: self.path / "backup")
    tensorboard = property(lambda self: self.path / "tensorboard")
    status_file = property(lambda self: self.path / "status.json")

    @property
    def finished(self) -> bool:
        return self.metrics.is_file() and self.model.is_file()

    @property
    def resumable(self) -> bool:
        return (self.backup / "training_metadata.json").is_file() and not self.finished

    def status(self) -> dict[str, Any]:
        if self.status_file.is_file():
            return json.loads(self.status_file.read_text())
        return {}

    def write_status(self, state: str, **extra: Any) -> None:
        atomic_write_text(self.status_file, json.dumps({"state": state, **extra}, indent=2))

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")

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
            import shutil

            shutil.rmtree(run.path)
        return run, run.resumable


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
