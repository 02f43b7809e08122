"""kflow serve: TensorFlow Serving's REST API over a TF Serving model base.

`kflow serve BASE` speaks the same REST API as `tensorflow_model_server
--rest_api_port` on the same model base (`BASE/NAME/VERSION/`, `models.config`),
so clients work unchanged against either. See `kflow/serve/README.md` for where
the two differ and why.

Importing this package is cheap; TensorFlow and aiohttp load when a server starts.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelServer": "kflow.serve.server",
    "ServerThread": "kflow.serve.server",
    "serve": "kflow.serve.server",
    "run_server": "kflow.serve.server",
    "ServerOptions": "kflow.serve.config",
    "BatchingOptions": "kflow.serve.config",
    "ServingError": "kflow.serve.status",
    "Client": "kflow.serve.client",
    "ClientError": "kflow.serve.client",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kflow.serve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
