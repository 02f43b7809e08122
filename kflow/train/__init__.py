"""Training: the engine, strategies, callbacks and run directories.

`kflow.train` is both this package and the function `kflow.train.engine.train`:
importing a submodule (`kflow.train.engine`) binds the package to the name
`kflow.train`, so the package forwards calls to the function and
`kflow.train(...)` always works.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from kflow.train.engine import train
from kflow.train.run import Run, load_run, read_history
from kflow.train.run_dir import RunDir

__all__ = ["train", "Run", "load_run", "read_history", "RunDir"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Run:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
