"""The search space: a recipe's declared ranges, narrowed or widened by `--search`.

Every hyperparameter a recipe declares with `search=` is searched by default:
a `(low, high[, "log"|step])` range for numbers, a list for choices, `True`
for a bool. `--search NAME=SPEC` (command line), a `search:` block in a YAML
config, or the `search=` argument of `kflow.tune` change that space:

| SPEC                 | meaning                                             |
|----------------------|-----------------------------------------------------|
| `0.0:0.5`            | a linear range, low and high included               |
| `1e-4:1e-2:log`      | a log-scale range                                   |
| `32:256:32`          | a range on a grid of step 32                        |
| `1e-4:1e-1:log:10`   | a log range on a grid of factor 10 (1e-4, 1e-3...)  |
| `adam,sgd,rmsprop`   | a choice (numbers allowed: `units=32,64,128`)       |

In YAML a spec is the same string, a list (a choice) or a mapping
`{low: 1e-4, high: 1e-2, log: true, step: null}`. Every range and value is
checked against the hyperparameter's declaration before any trial runs.

A hyperparameter given a value (`--set`, `overrides=`, a YAML value) is
fixed and leaves the space, unless it is named in `--search` too (its value
is then the search's starting point). Hyperparameters that only matter for
some values of another one are conditional (declared with `requires=`): `momentum` is
searched only in trials with `optimizer` sgd or rmsprop, `nesterov` only
with sgd, `regularizer_strength` only with a regularizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kflow.errors import ConfigError, did_you_mean
from kflow.recipe.base import Recipe
from kflow.recipe.hparams import Bool, Choice, Float, HParam, Int, SearchRange, Str

__all__ = ["Dim", "SearchSpace", "parse_search_args", "conditions_of"]


def conditions_of(recipe_cls: type[Recipe]) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """child hyperparameter -> (parent, the parent's values under which the child matters).

    Read from the declarations' `requires=` (one place for the rule: the recipe's
    validation, `kflow recipes show` and the tuner all use it).
    """
    specs = recipe_cls.hparam_specs()
    return {name: (parent, values) for name, spec in specs.items()
            for parent, values in spec.requires.items() if parent in specs}


#: Grid points KerasTuner's GridSearch uses for a range without a step.
_UNSTEPPED_GRID_POINTS = 10


def parse_search_args(items: Iterable[str]) -> dict[str, str]:
    """Parses `["dropout=0.0:0.5", "optimizer=adam,sgd"]` into `{name: spec}` strings."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                "--search expects NAME=LOW:HIGH[:log] or NAME=A,B,C (e.g. --search "
                f"dropout=0.0:0.5 --search optimizer=adam,sgd). Got '{item}' instead."
            )
        result[key.strip()] = value.strip()
    return result


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter.

    Attributes:
        name: The hyperparameter.
        kind: "float" or "int" (a range), "choice" (a list of values).
        low, high, log, step: The range (numbers only).
        values: The choices ("choice" only).
        default: Where the search starts (the recipe's value when inside the space).
        condition: `(parent, parent_values)` when the dimension only matters for
            some values of another hyperparameter, else `None`.
        origin: Where it was declared ("recipe", "--search", "search: block").
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple[Any, ...] = ()
    default: Any = None
    condition: tuple[str, tuple[Any, ...]] | None = None
    origin: str = "recipe"

    @property
    def is_range(self) -> bool:
        return self.kind in ("float", "int")

    def grid_size(self) -> int:
        """Number of values KerasTuner's grid search visits for this dimension."""
        if not self.is_range:
            return len(self.values)
        lo, hi = self.low, self.high
        if self.step is not None:
            if self.log:
                return int(math.log(hi / lo, self.step) + 1e-8) + 1
            return int((hi - lo) // self.step + 1)
        if self.kind == "int" and not self.log:
            return int(hi - lo + 1)
        if self.kind == "int":  # KerasTuner: 10 evenly spaced probabilities, as ints
            return len({int(lo * ((hi + 1) / lo) ** (i * 0.1 + 0.05)) for i in range(10)})
        return _UNSTEPPED_GRID_POINTS

    def describe(self) -> str:
        """`0.0..0.5`, `0.0001..0.01 (log)`, `adam, sgd` (+ the condition)."""
        if self.is_range:
            text = f"{_fmt(self.low)}..{_fmt(self.high)}"
            extras = (["log"] if self.log else []) + (
                [f"step {_fmt(self.step)}"] if self.step is not None else [])
            text += f" ({', '.join(extras)})" if extras else ""
        else:
            text = ", ".join(_fmt(v) for v in self.values)
        if self.condition:
            parent, values = self.condition
            text += f"  [only when {parent} is {' or '.join(map(str, values))}]"
        return text

    def to_config(self) -> dict[str, Any]:
        config = {"name": self.name, "kind": self.kind}
        if self.is_range:
            config.update(low=self.low, high=self.high, log=self.log, step=self.step)
        else:
            config["values"] = list(self.values)
        if self.condition:
            config["condition"] = [self.condition[0], list(self.condition[1])]
        return config


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class SearchSpace:
    """The searched hyperparameters of a recipe and the values the others keep.

    Build one with `SearchSpace.build(recipe, ...)`; the tuner turns it into
    KerasTuner `HyperParameters` (`to_keras_tuner`) and turns each trial's
    values back into recipe overrides (`overrides`).

    Attributes:
        recipe: The recipe with the fixed values every trial starts from.
        dims: The searched dimensions by name, parents before their children.
        conditions: child -> (parent, values) for every conditional hyperparameter.
    """

    recipe: Recipe
    dims: dict[str, Dim] = field(default_factory=dict)
    conditions: dict[str, tuple[str, tuple[Any, ...]]] = field(default_factory=dict)

    # -- building -------------------------------------------------------------
    @classmethod
    def build(
        cls,
        recipe: Recipe,
        *,
        search: Mapping[str, Any] | None = None,
        search_args: Iterable[str] = (),
        pinned: Iterable[str] = (),
        only: bool = False,
        search_origin: str = "search: block",
    ) -> SearchSpace:
        """Derives the space from the recipe's declarations, then applies changes.

        Args:
            recipe: The recipe (its values are the fixed values of the trials).
            search: `{name: spec}` changes from a YAML `search:` block or Python.
            search_args: `NAME=SPEC` strings from `--search` (applied last).
            pinned: Hyperparameters given a value; they leave the declared space.
            only: Search only the hyperparameters named in `search`/`search_args`.
            search_origin: How to name `search` in messages.

        Raises:
            ConfigError: an unknown name, a range or value outside the
                declaration, an empty or inverted range, a conditional
                hyperparameter that can never apply.
        """
        rcls = type(recipe)
        specs = rcls.hparam_specs()
        owner = rcls.name or rcls.__name__
        conditions = conditions_of(rcls)
        pinned = set(pinned)

        declared: dict[str, Dim] = {}
        if not only:
            for name, spec in specs.items():
                if spec.search is None or name in pinned:
                    continue
                declared[name] = _make_dim(spec, spec.search, recipe, owner, "recipe",
                                           f"the declaration of '{name}'")
        explicit: dict[str, Dim] = {}
        changes = [(k, v, search_origin) for k, v in (search or {}).items()]
        changes += [(k, v, "--search") for k, v in parse_search_args(search_args).items()]
        for key, raw, origin in changes:
            name = _canonical(rcls, key, origin)
            where = f"{origin} {key}={raw}" if origin == "--search" else f"{origin} ({key})"
            explicit[name] = _make_dim(specs[name], raw, recipe, owner, origin, where)
        dims = {**declared, **explicit}
        space = cls(recipe=recipe, conditions=conditions)
        space.dims = space._apply_conditions(dims, set(explicit), owner)
        if not space.dims:
            raise ConfigError(
                f"Nothing to search for recipe {owner}: no hyperparameter is searched. "
                "Name some with --search NAME=LOW:HIGH or NAME=A,B,C."
            )
        return space

    def _apply_conditions(self, dims: dict[str, Dim], explicit: set[str],
                          owner: str) -> dict[str, Dim]:
        """Attaches conditions; drops children that can never apply."""
        out: dict[str, Dim] = {}
        for name, dim in dims.items():
            if name not in self.conditions:
                out[name] = dim
                continue
            parent, active = self.conditions[name]
            if parent in dims:
                searched = dims[parent].values if not dims[parent].is_range else ()
                hits = tuple(v for v in searched if v in active)
                if hits and len(hits) < len(searched):
                    out[name] = _replace(dim, condition=(parent, hits))
                    continue
                if hits:  # every searched parent value activates it
                    out[name] = dim
                    continue
                parent_text = f"searched {parent} values are {', '.join(map(str, searched))}"
            else:
                value = self.recipe.hparams[parent]
                if value in active:
                    out[name] = dim
                    continue
                parent_text = f"{parent} is {value}"
            if name in explicit:
                raise ConfigError(
                    f"Cannot search '{name}' for recipe {owner}: it only applies when "
                    f"{parent} is {' or '.join(active)}, and the {parent_text}. Search "
                    f"{parent} too (e.g. --search {parent}={','.join(active)}) or drop "
                    f"'{name}' from the search."
                )
        # KerasTuner needs a parent declared before its children.
        parents = {d.condition[0] for d in out.values() if d.condition}
        order = [n for n in out if n in parents] + [n for n in out if n not in parents]
        return {n: out[n] for n in order}

    # -- facts ----------------------------------------------------------------
    @property
    def owner(self) -> str:
        rcls = type(self.recipe)
        return rcls.name or rcls.__name__

    def grid_size(self) -> int:
        """Number of combinations a grid search visits (conditional dims counted once
        per parent value that activates them)."""
        children: dict[str, list[Dim]] = {}
        for dim in self.dims.values():
            if dim.condition:
                children.setdefault(dim.condition[0], []).append(dim)
        total = 1
        for name, dim in self.dims.items():
            if dim.condition:
                continue
            if name in children:
                total *= sum(
                    math.prod(c.grid_size() for c in children[name] if v in c.condition[1])
                    for v in dim.values
                )
            else:
                total *= dim.grid_size()
        return total

    def grid_breakdown(self) -> str:
        """`optimizer 3 x units 4 x ...` (conditional dims marked)."""
        parts = []
        for dim in self.dims.values():
            mark = f" (when {dim.condition[0]}={'/'.join(map(str, dim.condition[1]))})" \
                if dim.condition else ""
            parts.append(f"{dim.name} {dim.grid_size()}{mark}")
        return " x ".join(parts)

    def describe(self) -> list[str]:
        """One line per dimension: `dropout: 0.0..0.5`."""
        return [f"{d.name}: {d.describe()}" for d in self.dims.values()]

    def to_config(self) -> list[dict[str, Any]]:
        return [d.to_config() for d in self.dims.values()]

    # -- KerasTuner -----------------------------------------------------------
    def to_keras_tuner(self):
        """The space as `keras_tuner.HyperParameters` (conditional scopes included)."""
        import keras_tuner

        hp = keras_tuner.HyperParameters()
        for dim in self.dims.values():
            if dim.condition:
                parent, values = dim.condition
                with hp.conditional_scope(parent, list(values)):
                    _declare(hp, dim)
            else:
                _declare(hp, dim)
        return hp

    def active(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The values of the searched dimensions that apply in a trial."""
        out = {}
        for name, dim in self.dims.items():
            if name not in values:
                continue
            if dim.condition and values.get(dim.condition[0]) not in dim.condition[1]:
                continue
            out[name] = values[name]
        return out

    def overrides(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Recipe overrides for a trial's values (extra keys like `tuner/epochs` ignored).

        Values are validated by their declarations (floats rounded to 8
        significant digits so configs read well); a conditional hyperparameter
        that does not apply in the trial gets its declared default.
        """
        specs = type(self.recipe).hparam_specs()
        out: dict[str, Any] = {}
        for name, value in self.active(values).items():
            if isinstance(value, float):
                value = float(f"{value:.8g}")
            out[name] = specs[name].validate(value, owner=self.owner)
        for child, (parent, active) in self.conditions.items():
            # A trial that picks a parent value under which a fixed child value would be
            # invalid (momentum=0.9 with adam) gets the child's declared default.
            if parent in self.dims and out[parent] not in active:
                out[child] = type(self.recipe).default_of(child)
        return out


def _replace(dim: Dim, **changes: Any) -> Dim:
    from dataclasses import replace

    return replace(dim, **changes)


def _canonical(rcls: type[Recipe], key: str, origin: str) -> str:
    specs = rcls.hparam_specs()
    if key in specs:
        return key
    group, dot, leaf = key.partition(".")
    if dot:
        if leaf == "name" and group in specs:
            return group
        for candidate in (leaf, f"{group}_{leaf}"):
            if candidate in specs:
                return candidate
    owner = rcls.name or rcls.__name__
    raise ConfigError(
        f"Unknown hyperparameter '{key}' in {origin} for recipe {owner}"
        f"{did_you_mean(key, list(specs))}. Run `kflow recipes show {owner}` to list them."
    )


def _make_dim(spec: HParam, raw: Any, recipe: Recipe, owner: str, origin: str,
              where: str) -> Dim:
    """Turns a declared or given search spec into a validated `Dim`."""
    name = spec.name
    numeric = isinstance(spec, (Float, Int))
    if isinstance(raw, SearchRange):
        raw = {"low": raw.low, "high": raw.high, "log": raw.log, "step": raw.step}
    elif isinstance(raw, tuple) and numeric:  # Python: (low, high[, "log"|step])
        parsed = spec._parse_search(raw)
        raw = {"low": parsed.low, "high": parsed.high, "log": parsed.log, "step": parsed.step}
    elif raw is True and isinstance(spec, Bool):
        raw = [False, True]
    elif raw is True and isinstance(spec, Choice):
        raw = list(spec.values)
    elif isinstance(raw, str):
        raw = _parse_text(spec, raw, owner, where)

    if isinstance(raw, Mapping):
        if "values" in raw:
            raw = list(raw["values"])
        else:
            unknown = set(raw) - {"low", "high", "log", "step"}
            if unknown or "low" not in raw or "high" not in raw:
                raise ConfigError(
                    f"The search spec of '{name}' in {where} must be a mapping with low and "
                    f"high (and optional log, step), or values. Got {dict(raw)!r} instead."
                )
            if not numeric:
                raise ConfigError(
                    f"'{name}' of recipe {owner} is {spec._a}; search it over values "
                    f"(e.g. {name}={_example_values(spec)}), not a range ({where})."
                )
            return _range_dim(spec, raw["low"], raw["high"], bool(raw.get("log", False)),
                              raw.get("step"), recipe, owner, origin, where)
    if isinstance(raw, (list, tuple)):
        return _choice_dim(spec, list(raw), recipe, owner, origin, where)
    raise ConfigError(
        f"The search spec of '{name}' in {where} must be LOW:HIGH[:log], a list of values "
        f"or a mapping. Got {raw!r} instead."
    )


def _parse_text(spec: HParam, text: str, owner: str, where: str) -> Any:
    text = text.strip()
    if not text:
        raise ConfigError(
            f"The search range of '{spec.name}' for {owner} is empty ({where}); give "
            "LOW:HIGH[:log] or A,B,C."
        )
    if "," in text:
        return [spec.parse(p.strip()) for p in text.split(",") if p.strip()]
    if ":" in text and isinstance(spec, (Float, Int)):
        parts = [p.strip() for p in text.split(":")]
        log = len(parts) > 2 and parts[2].lower() == "log"
        rest = parts[3:] if log else parts[2:]
        if len(rest) > 1:
            raise ConfigError(
                f"Cannot read the search range of '{spec.name}' in {where}: write "
                "LOW:HIGH, LOW:HIGH:log, LOW:HIGH:STEP or LOW:HIGH:log:FACTOR."
            )
        step = None
        if rest:
            try:
                step = float(rest[0])
            except ValueError:
                raise ConfigError(
                    f"The step of '{spec.name}' in {where} must be a number. Got "
                    f"'{rest[0]}' instead."
                ) from None
        return {"low": spec.parse(parts[0]), "high": spec.parse(parts[1]), "log": log,
                "step": step}
    if ":" in text:
        raise ConfigError(
            f"'{spec.name}' of recipe {owner} is {spec._a}; search it over values "
            f"(e.g. {spec.name}={_example_values(spec)}), not a range ({where})."
        )
    return [spec.parse(text)]


def _example_values(spec: HParam) -> str:
    if isinstance(spec, Bool):
        return "true,false"
    if isinstance(spec, Choice):
        return ",".join(str(v) for v in spec.values[:3])
    return "A,B,C"


def _check_value(spec: HParam, value: Any, owner: str, what: str, where: str) -> Any:
    try:
        return spec.validate(value, owner=owner)
    except ConfigError:
        hint = ""
        if isinstance(spec, Choice) and isinstance(value, str):
            names = [str(v) for v in spec.values]
            if spec.registry is not None:
                names += list(spec.registry.aliases())
            hint = did_you_mean(value, names)
        raise ConfigError(
            f"The search {what} of '{spec.name}' for {owner} must be {spec.describe()} "
            f"(its declaration). Got {value!r}{hint} in {where}."
        ) from None


def _range_dim(spec: HParam, low: Any, high: Any, log: bool, step: Any, recipe: Recipe,
               owner: str, origin: str, where: str) -> Dim:
    name = spec.name
    kind = "int" if isinstance(spec, Int) else "float"
    low = _check_value(spec, low, owner, "range", where)
    high = _check_value(spec, high, owner, "range", where)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (low, high)):
        raise ConfigError(
            f"The search range of '{name}' for {owner} must be two numbers. Got "
            f"{low!r}:{high!r} in {where}; search other values as a list (A,B,C)."
        )
    if low > high:
        raise ConfigError(
            f"The search range of '{name}' for {owner} is inverted: low {low} > high {high} "
            f"({where}). Write it LOW:HIGH."
        )
    if low == high:
        raise ConfigError(
            f"The search range of '{name}' for {owner} is empty: low == high == {low} "
            f"({where}). To fix the value use --set {name}={low}."
        )
    if log and low <= 0:
        raise ConfigError(
            f"The log-scale search range of '{name}' for {owner} needs low > 0. Got low={low} "
            f"({where})."
        )
    if step is not None:
        step = float(step)
        if kind == "int":
            if not step.is_integer():
                raise ConfigError(
                    f"The step of '{name}' for {owner} must be an int. Got {step} ({where})."
                )
            step = int(step)
        if log and step <= 1:
            raise ConfigError(
                f"The step of the log range of '{name}' for {owner} is a factor and must "
                f"be > 1. Got {step} ({where})."
            )
        if not log and (step <= 0 or step > high - low):
            raise ConfigError(
                f"The step of '{name}' for {owner} must be in (0, high - low] = (0, "
                f"{high - low}]. Got {step} ({where})."
            )
    dim = Dim(name=name, kind=kind, low=low, high=high, log=log, step=step, origin=origin)
    return _replace(dim, default=_range_default(dim, recipe.hparams[name]))


def _range_default(dim: Dim, value: Any) -> Any:
    """The recipe's value when the range (and its grid) contains it, else `None`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not dim.low <= value <= dim.high:
        return None
    if dim.step is not None:
        k = (math.log(value / dim.low, dim.step) if dim.log
             else (value - dim.low) / dim.step)
        if abs(k - round(k)) > 1e-9:
            return None
    return int(value) if dim.kind == "int" else float(value)


def _choice_dim(spec: HParam, raw: list[Any], recipe: Recipe, owner: str, origin: str,
                where: str) -> Dim:
    name = spec.name
    if not raw:
        raise ConfigError(
            f"The search values of '{name}' for {owner} are empty ({where}); give at least "
            "one value."
        )
    values: list[Any] = []
    for value in raw:
        if value is None:
            raise ConfigError(
                f"Cannot search '{name}' for {owner} over none/null ({where}); a search "
                f"value must be a number, a string or a bool. Use --set {name}=none instead."
            )
        value = _check_value(spec, value, owner, "value", where)
        if not any(v == value and type(v) is type(value) for v in values):
            values.append(value)
    kinds = {type(v) for v in values}
    if kinds == {int, float}:
        values = [float(v) for v in values]
    elif len(kinds) > 1:
        raise ConfigError(
            f"The search values of '{name}' for {owner} mix types "
            f"({', '.join(sorted(t.__name__ for t in kinds))}) in {where}; KerasTuner needs "
            "values of one type."
        )
    if isinstance(spec, Str) and not all(isinstance(v, str) for v in values):
        raise ConfigError(f"The search values of '{name}' for {owner} must be strings ({where}).")
    base = recipe.hparams[name]
    default = base if base in values and type(base) is type(values[0]) else None
    return Dim(name=name, kind="choice", values=tuple(values), default=default, origin=origin)


def _declare(hp: Any, dim: Dim) -> None:
    """Declares one dimension on a KerasTuner `HyperParameters`."""
    if dim.kind == "choice":
        if len(dim.values) == 1:
            hp.Fixed(dim.name, dim.values[0])
        elif set(dim.values) == {False, True} and all(isinstance(v, bool) for v in dim.values):
            hp.Boolean(dim.name, default=bool(dim.default))
        else:
            hp.Choice(dim.name, list(dim.values), default=dim.default, ordered=False)
        return
    sampling = "log" if dim.log else "linear"
    if dim.kind == "int":
        hp.Int(dim.name, int(dim.low), int(dim.high), step=dim.step, sampling=sampling,
               default=dim.default)
    else:
        hp.Float(dim.name, float(dim.low), float(dim.high), step=dim.step, sampling=sampling,
                 default=dim.default)
