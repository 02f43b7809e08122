"""Finding recipes: by registered name, by file path, or through a YAML file."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kflow.errors import ConfigError, UnknownNameError, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from kflow.recipe.base import Recipe

__all__ = ["register_recipe", "get_recipe_class", "list_recipes", "recipe_search_path"]

_RECIPES: dict[str, type[Recipe]] = {}
_SCANNED = False


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Registers a recipe class under `cls.name` (done automatically on subclassing)."""
    existing = _RECIPES.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ConfigError(
            f"Recipe name '{cls.name}' is registered twice: by {existing.__module__}."
            f"{existing.__qualname__} and {cls.__module__}.{cls.__qualname__}. "
            "Give one of them another `name`."
        )
    _RECIPES[cls.name] = cls
    return cls


#: The recipes shipped inside the package (`kflow/catalog/`), by module.
BUILTIN_MODULES = (
    "kflow.catalog.digits_mlp",
    "kflow.catalog.digits_cnn",
    "kflow.catalog.digits_resnet",
    "kflow.catalog.breast_cancer_mlp",
    "kflow.catalog.tabular",
    "kflow.catalog.lecture_mlp",
    "kflow.catalog.lecture_step_size",
    "kflow.catalog.digits_rnn",
    "kflow.catalog.digits_vit",
    "kflow.catalog.digits_transfer",
    "kflow.catalog.text_classifier",
    "kflow.catalog.sequence_forecast",
    "kflow.catalog.images",
    "kflow.catalog.tfds_recipe",
)


def recipe_search_path() -> list[Path]:
    """Folders whose recipe files `kflow recipes` lists: `$KFLOW_RECIPES_PATH` only.

    The variable (os.pathsep-separated folders) is the user's explicit choice
    to import every `*.py` in those folders. Nothing else is scanned: not the
    current directory, not a run directory. A recipe file elsewhere is
    imported only when it is named (`kflow train my_recipe.py`, or
    `recipe: my_recipe.py` in a YAML file the user passes).
    """
    paths = [Path(p) for p in os.environ.get("KFLOW_RECIPES_PATH", "").split(os.pathsep) if p]
    seen, result = set(), []
    for p in paths:
        rp = p.resolve()
        if rp.is_dir() and rp not in seen:
            seen.add(rp)
            result.append(rp)
    return result


def _scan() -> None:
    global _SCANNED
    if _SCANNED:
        return
    _SCANNED = True
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for folder in recipe_search_path():
        for path in sorted(folder.rglob("*.py")):
            if path.name.startswith("_"):
                continue
            load_recipe_file(path)


def load_recipe_file(path: str | Path) -> list[type[Recipe]]:
    """Imports a recipe file and returns the recipe classes it defines."""
    from kflow.recipe.base import Recipe

    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"Recipe file '{path}' does not exist.")
    module_name = "kflow_user_recipes." + "_".join(path.with_suffix("").parts[-3:]).replace(
        "-", "_"
    ).replace(".", "_")
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except ConfigError:
            del sys.modules[module_name]
            raise
        except Exception as exc:  # a user's recipe file with a bug
            del sys.modules[module_name]
            raise ConfigError(f"Could not import recipe file '{path}': {exc!r}") from exc
    return [
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Recipe) and v.__module__ == module_name
    ]


def list_recipes() -> dict[str, type[Recipe]]:
    """All registered recipes (after scanning the search path), by name."""
    _scan()
    return dict(sorted(_RECIPES.items()))


def get_recipe_class(spec: str) -> type[Recipe]:
    """Resolves a registered name, `path.py` or `path.py:ClassName` to a recipe class."""
    if isinstance(spec, type):
        return spec
    path_part, _, class_name = spec.partition(":") if ".py" in spec else (spec, "", "")
    if path_part.endswith(".py"):
        classes = load_recipe_file(path_part)
        if class_name:
            for cls in classes:
                if cls.__name__ == class_name:
                    return cls
            raise UnknownNameError(
                f"Recipe file '{path_part}' has no recipe class '{class_name}'. "
                f"It defines: {', '.join(c.__name__ for c in classes) or 'none'}."
            )
        concrete = [c for c in classes if c.name] or classes
        if len(concrete) != 1:
            raise ConfigError(
                f"Recipe file '{path_part}' defines {len(concrete)} recipes "
                f"({', '.join(c.__name__ for c in concrete) or 'none'}); pick one with "
                f"'{path_part}:ClassName'."
            )
        return concrete[0]
    recipes = list_recipes()
    if spec in recipes:
        return recipes[spec]
    raise UnknownNameError(
        f"Unknown recipe '{spec}'{did_you_mean(spec, list(recipes))}. "
        f"Available: {', '.join(recipes) or 'none'}. A recipe can also be a file "
        "(path.py or path.py:ClassName) or a YAML file with a 'recipe:' key."
    )


def _registered_name(cls: type[Any]) -> str:
    return cls.name or cls.__name__
