"""Applying YAML and command-line overrides to a recipe's declared hyperparameters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kflow.errors import ConfigError
from kflow.recipe.base import Recipe
from kflow.recipe.registry import get_recipe_class

__all__ = [
    "parse_set_args",
    "flatten_overrides",
    "load_yaml",
    "resolve_recipe",
    "ENGINE_KEYS",
]

# Top-level YAML keys that are not hyperparameters but options of the run.
ENGINE_KEYS = ("seed", "strategy", "run_dir")
_META_KEYS = ("recipe", "kflow_version", "recipe_source", "search")


def parse_set_args(items: Iterable[str]) -> dict[str, str]:
    """Parses `["dropout=0.3", "optimizer.learning_rate=3e-4"]` into raw strings."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set expects KEY=VALUE (e.g. --set dropout=0.3). Got '{item}' instead."
            )
        result[key.strip()] = value.strip()
    return result


def _canonical_key(cls: type[Recipe], key: str) -> str:
    specs = cls.hparam_specs()
    if key in specs:
        return key
    if "." in key:
        group, _, leaf = key.partition(".")
        if leaf == "name" and group in specs:
            return group
        for candidate in (leaf, f"{group}_{leaf}"):
            if candidate in specs and specs[candidate].group in (group, "model", "training",
                                                                  "optimizer", "data"):
                return candidate
    raise ConfigError(cls._unknown_message(key))


def flatten_overrides(cls: type[Recipe], mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Flattens grouped (`optimizer: {name: adam, learning_rate: 1e-3}`) or dotted keys."""
    specs = cls.hparam_specs()
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if key in ("model", "optimizer", "training", "data") and isinstance(value, Mapping):
            for sub, subvalue in value.items():
                name = key if (sub == "name" and key in specs) else sub
                flat[_canonical_key(cls, name if name in specs else f"{key}.{sub}")] = subvalue
        else:
            flat[_canonical_key(cls, key)] = value
    return flat


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML config file into a dict, with one-line errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"Malformed YAML in '{path}'{where}: {problem}.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file '{path}' must hold a mapping (key: value lines). "
            f"Got a {type(data).__name__} instead."
        )
    return data


def resolve_recipe(
    spec: str | type[Recipe] | Recipe,
    overrides: Mapping[str, Any] | None = None,
    set_args: Iterable[str] = (),
) -> tuple[Recipe, dict[str, Any]]:
    """Builds a validated recipe from a name, file, YAML config or class.

    Args:
        spec: A registered name (`digits-cnn`), a file (`path.py[:Class]`), a
            YAML file (`recipe: NAME` plus overrides), a Recipe class or instance.
        overrides: Hyperparameter values (flat, dotted or grouped).
        set_args: `KEY=VALUE` strings from the command line (applied last).

    Returns:
        The recipe and the engine options found in the YAML file (`seed`...).
    """
    engine: dict[str, Any] = {}
    values: dict[str, Any] = {}
    if isinstance(spec, Recipe):
        cls = type(spec)
        values.update(spec.hparams)
    elif isinstance(spec, str) and spec.endswith((".yaml", ".yml")):
        data = load_yaml(spec)
        if "recipe" not in data:
            raise ConfigError(
                f"Config file '{spec}' has no 'recipe:' key; add e.g. 'recipe: digits-cnn'."
            )
        recipe_ref = data["recipe"]
        if isinstance(recipe_ref, str) and recipe_ref.endswith(".py") or ".py:" in str(recipe_ref):
            ref_path, _, ref_cls = str(recipe_ref).partition(":")
            if not Path(ref_path).is_absolute():
                ref_path = str((Path(spec).parent / ref_path).resolve())
            recipe_ref = f"{ref_path}:{ref_cls}" if ref_cls else ref_path
        cls = get_recipe_class(recipe_ref)
        engine = {k: data[k] for k in ENGINE_KEYS if k in data}
        rest = {k: v for k, v in data.items() if k not in ENGINE_KEYS and k not in _META_KEYS}
        values.update(flatten_overrides(cls, rest))
        engine["config_dir"] = str(Path(spec).resolve().parent)  # relative data paths
    else:
        cls = get_recipe_class(spec)
    if overrides:
        values.update(flatten_overrides(cls, overrides))
    specs = cls.hparam_specs()
    for key, text in parse_set_args(set_args).items():
        canon = _canonical_key(cls, key)
        values[canon] = specs[canon].parse(text)
    recipe = cls(**values)
    recipe.config_dir = engine.pop("config_dir", None) or getattr(spec, "config_dir", None)
    return recipe, engine
