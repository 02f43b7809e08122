"""Exceptions raised by kflow.

Every error a user can cause (a wrong recipe field, an unknown name, bad data)
is a :class:`KflowError`. The CLI prints such errors as one line and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "KflowError",
    "ConfigError",
    "UnknownNameError",
    "DataError",
    "RunError",
    "did_you_mean",
]


class KflowError(Exception):
    """Base class of the errors caused by user input (config, data, files)."""


class ConfigError(KflowError, ValueError):
    """A recipe, hyperparameter or YAML value is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A name (recipe, initializer, optimizer...) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise.
        return str(self.args[0]) if self.args else ""


class DataError(KflowError, ValueError):
    """Input data is missing, malformed or unusable."""


class RunError(KflowError):
    """A run directory is missing, incomplete or would be overwritten."""


def did_you_mean(received: str, allowed: Iterable[str]) -> str:
    """Returns `" (did you mean 'x'?)"` for the closest allowed name, or `""`."""
    if not isinstance(received, str):
        return ""
    allowed = list(allowed)
    lowered = {a.lower().replace("-", "_"): a for a in allowed}
    key = received.lower().replace("-", "_")
    if key in lowered and lowered[key] != received:
        return f" (did you mean '{lowered[key]}'?)"
    match = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.6)
    return f" (did you mean '{lowered[match[0]]}'?)" if match else ""
