"""Training insight: gradient statistics, the training doctor, reports, LR finder.

Importing this package is cheap; Keras and TensorFlow load when a model,
callback or plot is first used.

- `InsightModel`: a functional model whose train step records per-layer
  gradient norms, weight norms and update ratios every N steps.
- Callbacks: `GradientNormLogger` (grad_norms.csv, history, TensorBoard),
  `DeadUnitMonitor`, `LearningRateLogger`, `NanGuard`.
- `diagnose_run` (the doctor), `write_report`, `compare_runs`, `lr_find`.
- `activation_stats` / `recipe_activation_stats`: per-layer activation mean,
  variance and saturation on a probe batch (`kflow inspect RECIPE`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InsightModel": "kflow.insight.insight_model",
    "as_insight_model": "kflow.insight.insight_model",
    "custom_objects": "kflow.insight.insight_model",
    "GradientNormLogger": "kflow.insight.grad_logger",
    "DeadUnitMonitor": "kflow.insight.dead_units",
    "LearningRateLogger": "kflow.insight.lr_logger",
    "NanGuard": "kflow.insight.nan_guard",
    "Finding": "kflow.insight.doctor",
    "diagnose": "kflow.insight.doctor",
    "diagnose_run": "kflow.insight.doctor",
    "format_findings": "kflow.insight.doctor",
    "write_report": "kflow.insight.report",
    "compare_runs": "kflow.insight.compare",
    "lr_find": "kflow.insight.lr_finder",
    "activation_stats": "kflow.insight.activation_stats",
    "recipe_activation_stats": "kflow.insight.activation_stats",
    "ActivationStats": "kflow.insight.activation_stats",
    "LRFinderResult": "kflow.insight.lr_finder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kflow.insight' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
