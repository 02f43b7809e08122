"""Opening a run's `.keras` files, with an error that says what is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from kflow.errors import RunError

__all__ = ["load_model_file"]


def load_model_file(path: str | Path) -> Any:
    """Loads a `.keras` file with plain `keras.saving.load_model`.

    Args:
        path: `model.keras` or `checkpoints/best.keras` of a run.

    Raises:
        RunError: When the file is missing or is not a valid `.keras` archive
            (truncated by a full disk or an interrupted copy).
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path} does not exist.")
    if not zipfile.is_zipfile(path):
        raise RunError(
            f"{path.name} is damaged (not a valid .keras archive): {path}. Re-run the "
            "training command with --overwrite to train it again, or restore the file "
            "from a copy."
        )
    try:
        return keras.saving.load_model(path)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise RunError(
            f"{path.name} is damaged or was written by an incompatible Keras ({exc}); "
            f"path: {path}. Re-run the training command with --overwrite to train it again."
        ) from exc
