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
ENGINE_KEYS = ("seed", "strategy", "run_dir", "track")  # track: mlflow (kflow.tracking)
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
    aliases = getattr(cls, "hparam_aliases", {})  # e.g. tfds: `name` -> `tfds_name`
    if key in aliases:
        return aliases[key]
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
    *,
    allow_files: bool = True,
) -> tuple[Recipe, dict[str, Any]]:
    """Builds a validated recipe from a name, file, YAML config or class.

    Args:
        spec: A registered name (`digits-cnn`), a file (`path.py[:Class]`), a
            YAML file (`recipe: NAME` plus overrides), a Recipe class or instance.
        overrides: Hyperparameter values (flat, dotted or grouped).
        set_args: `KEY=VALUE` strings from the command line (applied last).
        allow_files: Whether the YAML's `recipe:` may name a `.py` file to
            import (its code runs). `False` for a config that came with a run
            directory unless the user consented. Defaults to `True`.

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
        cls = _recipe_class_from_yaml(str(data["recipe"]), Path(spec), allow_files)
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
    config_dir = engine.pop("config_dir", None) or getattr(spec, "config_dir", None)
    seed = spec.seed if isinstance(spec, Recipe) else int(engine.get("seed", 0))
    return cls(seed=seed, config_dir=config_dir, **values), engine


def _recipe_class_from_yaml(ref: str, yaml_path: Path, allow_files: bool) -> type[Recipe]:
    """The class a YAML's `recipe:` names: a registered name, `file.py[:Class]`
    (relative to the YAML's folder) or `package.module:Class`."""
    import importlib

    path_part, _, cls_name = ref.partition(":") if ".py" in ref else (ref, "", "")
    if path_part.endswith(".py"):
        path = Path(path_part).expanduser()
        if not path.is_absolute():
            path = (yaml_path.parent / path).resolve()
        if not allow_files:
            raise ConfigError(
                f"'{yaml_path}' names the recipe file {path}; kflow does not run code from a "
                "run directory unless you allow it. If you trust that file, pass "
                "--trust-recipe-file (Python: trust_recipe_file=True)."
            )
        if not path.is_file():
            raise ConfigError(
                f"The recipe file {path} named in '{yaml_path}' does not exist (moved or "
                "deleted?). Put it back, or edit 'recipe:' in that file to its new path."
            )
        return get_recipe_class(f"{path}:{cls_name}" if cls_name else str(path))
    if ":" in ref:
        module_name, _, qualname = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"Cannot import the recipe '{ref}' named in '{yaml_path}': {exc}. Install or "
                "put on PYTHONPATH the package that defines it."
            ) from None
        if not (isinstance(obj, type) and issubclass(obj, Recipe)):
            raise ConfigError(f"'{ref}' named in '{yaml_path}' is not a kflow Recipe class.")
        return obj
    return get_recipe_class(ref)
