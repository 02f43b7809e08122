"""Recipes: declared hyperparameters, registry and overrides."""

from kflow.recipe import hparams as hp
from kflow.recipe.base import LayerChoices, Recipe
from kflow.recipe.overrides import flatten_overrides, load_yaml, parse_set_args, resolve_recipe
from kflow.recipe.registry import get_recipe_class, list_recipes, register_recipe

__all__ = [
    "hp",
    "Recipe",
    "LayerChoices",
    "flatten_overrides",
    "load_yaml",
    "parse_set_args",
    "resolve_recipe",
    "get_recipe_class",
    "list_recipes",
    "register_recipe",
]
