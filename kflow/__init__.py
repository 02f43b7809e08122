"""kflow: from data to a deployed Keras model, with the field's good practices built in.

Importing `kflow` is cheap: TensorFlow and Keras load on first use of a
function that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it (loaded lazily).
_EXPORTS = {
    "Recipe": "kflow.recipe.base",
    "LayerChoices": "kflow.recipe.base",
    "hp": "kflow.recipe",
    "resolve_recipe": "kflow.recipe.overrides",
    "list_recipes": "kflow.recipe.registry",
    "get_recipe_class": "kflow.recipe.registry",
    "train": "kflow.training.engine",
    "cross_validate": "kflow.training.cross_validation",
    "tune": "kflow.tuning.search",
    "Run": "kflow.run",
    "load_run": "kflow.run",
    "lr_find": "kflow.insight.lr_finder",
    "diagnose_run": "kflow.insight.doctor",
    "write_report": "kflow.insight.report",
    "compare_runs": "kflow.insight.compare",
    "export_run": "kflow.export",
    "ModelServer": "kflow.serve.server",
    "ServerOptions": "kflow.serve.config",
    "KflowError": "kflow.errors",
    "ConfigError": "kflow.errors",
    "DataError": "kflow.errors",
    "RunError": "kflow.errors",
}
_SUBMODULES = ("blocks", "optim", "data", "training", "tuning", "recipe", "errors", "insight",
               "export", "serve", "run")

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"kflow.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'kflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
