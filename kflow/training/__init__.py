"""Training: the trainer (one training setup), strategies, callbacks.

The public entry point is the function `kflow.train` (defined in
`kflow.training.engine`); this package holds what it is made of.
"""

from __future__ import annotations

from kflow.training.engine import train

__all__ = ["train"]
