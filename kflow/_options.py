"""Options objects declared as dataclasses (`ExportOptions`, `TuneOptions`): one resolver."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def resolve_options(cls: type[T], options: T | None, values: dict[str, Any], owner: str) -> T:
    """`options` (or `cls()`) with the fields in `values` replaced.

    Args:
        cls: The options dataclass.
        options: An instance, or `None` for the defaults.
        values: Field values given by name (a function's `**option_values`).
        owner: The function named in the error, e.g. `"export_run()"`.

    Raises:
        TypeError: A name in `values` is not a field; the message lists the valid ones.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TypeError(f"{owner} got unknown option(s) {', '.join(unknown)}. "
                        f"Valid options: {', '.join(names)}.")
    return dataclasses.replace(options or cls(), **values)
