"""Hyperparameter declarations: one place for defaults, validation, docs and search.

A recipe declares each hyperparameter once, as a class attribute:

```python
class MyRecipe(kflow.Recipe):
    dropout = kflow.hp.Float(0.2, low=0.0, high=1.0, high_inclusive=False,
                             doc="Dropout rate after each hidden block.",
                             search=(0.0, 0.5))
```

The declaration validates values from Python, YAML and the command line,
documents `kflow recipes show`, and later becomes the KerasTuner search space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kflow.errors import ConfigError, did_you_mean

__all__ = ["HParam", "Float", "Int", "Bool", "Choice", "Str", "SearchRange", "Switch"]

_GROUPS = ("model", "optimizer", "training", "data")


@dataclass(frozen=True)
class SearchRange:
    """A search range for a numeric hyperparameter.

    Args:
        low: Lower bound (inclusive).
        high: Upper bound (inclusive).
        log: Sample on a log scale. Defaults to `False`.
        step: Grid step for `Int`/`Float`. Defaults to `None`.
    """

    low: float
    high: float
    log: bool = False
    step: float | None = None


class HParam:
    """Base class of a declared hyperparameter.

    Args:
        default: The default value (validated on first use).
        doc: One line shown in `kflow recipes show` and `--help`.
        group: Section of the config the value belongs to: "model",
            "optimizer", "training" or "data". Defaults to "model".
        search: Search space for the tuner: a `(low, high)` or
            `(low, high, "log")` tuple / `SearchRange` for numbers, a list of
            values for choices. Defaults to `None` (not searched).
        nullable: Whether `None` is an allowed value. Defaults to `False`.
        requires: Values of other hyperparameters this one needs to take
            effect, e.g. `{"optimizer": ("sgd", "rmsprop")}`: the tuner searches
            it only under those values, `kflow recipes show` says so, and (with
            `strict_requires`) a value other than the default is an error
            otherwise. Defaults to `None` (no condition).
        strict_requires: Whether a non-default value whose condition does not
            hold is an error (`True`), or is kept for when the condition is
            switched on later, e.g. a regularization strength set in a YAML
            file for a later `--set regularizer=l2`. Defaults to `True`.
    """

    type_name = "value"

    def __init__(
        self,
        default: Any,
        *,
        doc: str = "",
        group: str = "model",
        search: Any = None,
        nullable: bool = False,
        requires: dict[str, Sequence[Any]] | None = None,
        strict_requires: bool = True,
    ):
        if group not in _GROUPS:
            raise ValueError(f"group must be one of {_GROUPS}, got {group!r}")
        self.default = default
        self.doc = doc
        self.group = group
        self.nullable = nullable
        self.requires = {k: tuple(v) for k, v in (requires or {}).items()}
        self.strict_requires = strict_requires
        self.name: str = ""
        self.search = self._parse_search(search)

    # Descriptor protocol: `recipe.dropout` returns the instance's value.
    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return instance.hparams[self.name]

    def __set__(self, instance: Any, value: Any) -> None:
        instance.hparams[self.name] = self.validate(value, owner=instance.name)

    def _parse_search(self, search: Any) -> Any:
        return search

    # Validation -----------------------------------------------------------
    @property
    def _a(self) -> str:
        return f"an {self.type_name}" if self.type_name[0] in "aeiou" else f"a {self.type_name}"

    def describe(self) -> str:
        """What values are allowed, in words (used in messages and docs)."""
        return self._a

    def _fail(self, value: Any, owner: str, extra: str = "") -> ConfigError:
        return ConfigError(
            f"The '{self.name}' parameter of {owner} must be {self.describe()}. "
            f"Got {value!r} instead{extra}."
        )

    def parse(self, text: str) -> Any:
        """Converts command-line text to a value (before validation)."""
        import yaml

        if text.strip().lower() in ("none", "null", "~"):
            return None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    def validate(self, value: Any, owner: str = "the recipe") -> Any:
        """Returns the value, normalized, or raises `ConfigError`."""
        if value is None:
            if self.nullable:
                return None
            raise self._fail(value, owner)
        return self._validate(value, owner)

    def _validate(self, value: Any, owner: str) -> Any:
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type_name,
            "default": self.default,
            "allowed": self.describe(),
            "group": self.group,
            "doc": self.doc,
            "search": self.search,
        }


class _Number(HParam):
    cast: Callable[[Any], Any] = float

    def __init__(
        self,
        default: Any,
        *,
        low: float | None = None,
        high: float | None = None,
        low_inclusive: bool = True,
        high_inclusive: bool = True,
        **kwargs: Any,
    ):
        self.low, self.high = low, high
        self.low_inclusive, self.high_inclusive = low_inclusive, high_inclusive
        super().__init__(default, **kwargs)

    def _parse_search(self, search: Any) -> SearchRange | None:
        if search is None or isinstance(search, SearchRange):
            return search
        if isinstance(search, (tuple, list)) and len(search) in (2, 3):
            log = len(search) == 3 and search[2] == "log"
            step = search[2] if len(search) == 3 and not log else None
            return SearchRange(search[0], search[1], log=log, step=step)
        raise ValueError(f"search must be (low, high[, 'log'|step]), got {search!r}")

    def parse(self, text: str) -> Any:
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return super().parse(text)

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return self._a
        if self.high is None:
            op = ">=" if self.low_inclusive else ">"
            return f"{self._a} {op} {self.low}"
        if self.low is None:
            op = "<=" if self.high_inclusive else "<"
            return f"{self._a} {op} {self.high}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"{self._a} in {left}{self.low}, {self.high}{right}"

    def _in_range(self, v: float) -> bool:
        if self.low is not None and (v < self.low or (v == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (
            v > self.high or (v == self.high and not self.high_inclusive)
        ):
            return False
        return True


class Float(_Number):
    """A real-valued hyperparameter with an optional range.

    Example:

    ```python
    learning_rate = Float(1e-3, low=0.0, low_inclusive=False, search=(1e-4, 1e-1, "log"))
    ```
    """

    type_name = "float"

    def _validate(self, value: Any, owner: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise self._fail(value, owner) from None
            else:
                raise self._fail(value, owner)
        value = float(value)
        if math.isnan(value) or not self._in_range(value):
            raise self._fail(value, owner)
        return value


class Int(_Number):
    """An integer hyperparameter with an optional range."""

    type_name = "int"

    def _validate(self, value: Any, owner: str) -> int:
        if isinstance(value, bool):
            raise self._fail(value, owner)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise self._fail(value, owner) from None
        if not isinstance(value, int) or not self._in_range(value):
            raise self._fail(value, owner)
        return value


class Bool(HParam):
    """A true/false hyperparameter (accepts true/false, yes/no, on/off, 1/0)."""

    type_name = "bool"

    def describe(self) -> str:
        return "a bool (true or false)"

    def _parse_search(self, search: Any) -> list[bool] | None:
        """`True` searches both values; a list searches the values it names."""
        if search is None or search is False:
            return None
        if search is True:
            return [False, True]
        if (isinstance(search, (list, tuple)) and search
                and all(isinstance(v, bool) for v in search)):
            return list(search)
        raise ValueError(f"search must be True or a list of bools, got {search!r}")

    def _validate(self, value: Any, owner: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise self._fail(value, owner)


class Str(HParam):
    """A free-form string hyperparameter (a path, a column name...)."""

    type_name = "string"

    def parse(self, text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else text

    def _validate(self, value: Any, owner: str) -> str:
        if not isinstance(value, str):
            raise self._fail(value, owner)
        return value


class Choice(HParam):
    """A hyperparameter that takes one of a set of values.

    Args:
        default: The default choice.
        values: The allowed values. Mutually exclusive with `registry`.
        registry: A `kflow` registry whose names (and aliases) are allowed;
            aliases are normalized to the canonical name.
        **kwargs: See `HParam`.
    """

    type_name = "choice"

    def __init__(
        self,
        default: Any,
        values: Sequence[Any] | None = None,
        *,
        registry: Any = None,
        **kwargs: Any,
    ):
        if (values is None) == (registry is None):
            raise ValueError("Choice needs exactly one of `values` or `registry`.")
        self._values = list(values) if values is not None else None
        self.registry = registry
        super().__init__(default, **kwargs)

    @property
    def values(self) -> list[Any]:
        return self._values if self._values is not None else self.registry.names()

    def _parse_search(self, search: Any) -> list[Any] | None:
        if search is None:
            return None
        if search is True:
            return None if self.registry is not None else list(self.values)
        return list(search)

    def describe(self) -> str:
        return "one of: " + ", ".join(str(v) for v in self.values)

    def parse(self, text: str) -> Any:
        # Registry names are strings too ("none" is a regularizer, not null).
        if self.registry is not None or all(isinstance(v, str) for v in self._values):
            return text.strip()
        return super().parse(text)

    def _validate(self, value: Any, owner: str) -> Any:
        if self.registry is not None:
            if isinstance(value, str) and value in self.registry:
                return self.registry.canonical(value)
            names = self.registry.names() + list(self.registry.aliases())
            raise self._fail(value, owner, extra=_suggest(value, names))
        for allowed in self.values:
            if value == allowed and type(value) is type(allowed):
                return allowed
            if isinstance(allowed, bool) and isinstance(value, str):
                continue
            if isinstance(value, str) and str(allowed) == value:
                return allowed
        raise self._fail(value, owner, extra=_suggest(value, [str(v) for v in self.values]))


def _suggest(value: Any, names: list[str]) -> str:
    return did_you_mean(value, names) if isinstance(value, str) else ""


class Switch(Bool):
    """A setting that is on, off, or "auto" (kflow or Keras decides).

    Accepts what `Bool` accepts (true/false, yes/no, on/off, 1/0) and
    "auto"; values are `True`, `False` or "auto".
    """

    type_name = "switch"

    def describe(self) -> str:
        return 'a bool (true or false) or "auto"'

    def _validate(self, value: Any, owner: str) -> bool | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super()._validate(value, owner)
