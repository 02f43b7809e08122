"""Export: SavedModel, TF Serving model base, TFLite with quantization.

`export_run` turns a finished run directory into artifacts real consumers
load, each checked against the live Keras model before it is published:

- a SavedModel whose `serving_default` takes named raw inputs and returns
  named outputs, published atomically as `BASE/NAME/VERSION/` with TF
  Serving warmup records, plus `BASE/models.config`;
- TFLite files (float32, float16, dynamic range, int8) evaluated in the
  LiteRT interpreter against an accuracy gate, with `metadata.json` (and a
  preprocessing sidecar when asked) for the on-device runner in `tflite/`;
- `RUN_DIR/export/export.json` and `export.html` with the parity figures.

Importing this package does not import TensorFlow.
"""

from __future__ import annotations

from kflow.export.errors import (
    AccuracyGateError,
    BaseNotWritableError,
    ExportError,
    ParityError,
    RepresentativeDataError,
    TFLiteConversionError,
    VersionExistsError,
)
from kflow.export.exporter import TFLITE_PREPROCESSING, ExportOptions, ExportResult, export_run
from kflow.export.layout import InputLayout
from kflow.export.model_base import ModelBase, read_models_config
from kflow.export.sidecar import apply_sidecar
from kflow.export.tflite import TFLITE_VARIANTS, TFLiteRunner, parse_variants
from kflow.export.warmup import read_warmup_requests

__all__ = [
    "export_run",
    "ExportOptions",
    "ExportResult",
    "TFLITE_PREPROCESSING",
    "TFLITE_VARIANTS",
    "InputLayout",
    "ModelBase",
    "TFLiteRunner",
    "apply_sidecar",
    "parse_variants",
    "read_models_config",
    "read_warmup_requests",
    "ExportError",
    "VersionExistsError",
    "BaseNotWritableError",
    "ParityError",
    "AccuracyGateError",
    "TFLiteConversionError",
    "RepresentativeDataError",
]
