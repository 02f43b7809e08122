"""Errors of `kflow export`: one line each, raised before anything is published."""

from __future__ import annotations

from kflow.errors import DataError, KflowError

__all__ = [
    "ExportError",
    "VersionExistsError",
    "BaseNotWritableError",
    "ParityError",
    "AccuracyGateError",
    "TFLiteConversionError",
    "RepresentativeDataError",
]


class ExportError(KflowError):
    """An export could not be made; nothing was published."""


class VersionExistsError(ExportError):
    """The requested version of a model is already in the model base."""


class BaseNotWritableError(ExportError):
    """The model base directory cannot be created or written."""


class ParityError(ExportError):
    """An exported artifact does not reproduce the Keras model's outputs."""


class AccuracyGateError(ExportError):
    """A TFLite variant lost more accuracy than the gate allows."""


class TFLiteConversionError(ExportError):
    """The TFLite converter cannot take (part of) the model."""


class RepresentativeDataError(ExportError, DataError):
    """Full-integer quantization has no representative data to calibrate on."""
