"""Opening a run's `.keras` files, with an error that says what is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from kflow.errors import RunError

__all__ = ["load_model_file"]


#: Modules that register the Keras classes of models saved by kflow before runs saved
#: plain Keras models (`InsightModel`, `Impute`, `TrainingAugmentation`, `UniformFanIn`).
_LEGACY_CLASS_MODULES = ("kflow.blocks.keras_objects", "kflow.data.impute",
                         "kflow.data.training_augmentation", "kflow.insight.insight_model")


def _names_kflow_classes(path: Path) -> bool:
    """Whether the archive's config names a kflow class (a run saved by an older kflow)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return b'"kflow>' in archive.read("config.json")
    except (KeyError, OSError, zipfile.BadZipFile):
        return False


def load_model_file(path: str | Path) -> Any:
    """Loads a `.keras` file with plain `keras.saving.load_model`.

    A run's model files hold plain Keras models (see
    `kflow.training.plain_model`), which load without kflow. Files written by
    earlier kflow versions name kflow classes; their modules are imported
    first, so those still load.

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
    if _names_kflow_classes(path):
        import importlib

        for module in _LEGACY_CLASS_MODULES:
            importlib.import_module(module)
    try:
        return keras.saving.load_model(path)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise RunError(
            f"{path.name} is damaged or was written by an incompatible Keras ({exc}); "
            f"path: {path}. Re-run the training command with --overwrite to train it again."
        ) from exc
