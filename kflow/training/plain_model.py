"""What gets saved: the trained model as a plain Keras model (placeholder, see below)."""

from __future__ import annotations

from typing import Any

__all__ = ["to_plain_model"]


def to_plain_model(model: Any) -> Any:
    """Returns the model to save in `model.keras` / `checkpoints/best.keras`.

    TODO(#11): strip training-time wrappers so plain `keras.saving.load_model`
    opens the file without kflow.
    """
    return model
