"""`ClassWeight`: the `class_weight` hyperparameter (none, balanced, or a mapping)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from kflow.recipe.hparams import HParam

__all__ = ["ClassWeight", "CLASS_WEIGHT_MODES"]

CLASS_WEIGHT_MODES = ("none", "balanced")


class ClassWeight(HParam):
    """`none`, `balanced`, or a mapping `{class name or id: weight}`.

    From the command line: `--set class_weight=balanced` or
    `--set class_weight=0:1,1:5` (or YAML flow style `{0: 1, 1: 5}`).
    """

    type_name = "class weighting"

    def describe(self) -> str:
        return 'none, balanced, or a mapping {class: weight >= 0}'

    def parse(self, text: str) -> Any:
        text = text.strip()
        if text.lower() in CLASS_WEIGHT_MODES or text.startswith("{"):
            return super().parse(text)
        pairs = [p.split(":", 1) for p in text.split(",") if p.strip()]
        if not pairs or any(len(p) != 2 for p in pairs):
            return text  # rejected by validation with the full message
        out: dict[Any, Any] = {}
        for k, v in pairs:
            try:
                out[k.strip()] = float(v)
            except ValueError:
                return text
        return out

    def _validate(self, value: Any, owner: str) -> Any:
        if isinstance(value, str) and value.strip().lower() in CLASS_WEIGHT_MODES:
            return value.strip().lower()
        if not isinstance(value, Mapping) or not value:
            raise self._fail(value, owner)
        out: dict[str, float] = {}
        for k, v in value.items():
            if (isinstance(v, bool) or not isinstance(v, (int, float))
                    or not math.isfinite(v) or v < 0):
                raise self._fail(value, owner, extra=f": the weight of class {k!r} must be a "
                                 "finite number >= 0")
            out[str(k)] = float(v)
        return out
