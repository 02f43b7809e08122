"""`kflow recipes [show NAME]`: list recipes and document their hyperparameters."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("recipes", help="list recipes, or show one's hyperparameters",
                       description="List the registered recipes, or show every "
                       "hyperparameter of one recipe with its default, allowed values and "
                       "search range.")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="recipe to show (name, file.py or YAML)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kflow.errors import ConfigError
    from kflow.recipe.registry import list_recipes

    if args.action == "list":
        recipes = list_recipes()
        width = max((len(n) for n in recipes), default=0)
        for name, cls in recipes.items():
            print(f"{name:<{width}}  {cls.description}")
        return 0
    if not args.name:
        raise ConfigError("`kflow recipes show` needs a recipe name, e.g. "
                          "`kflow recipes show digits-cnn`.")
    print(describe(args.name))
    return 0


def describe(spec: str) -> str:
    """The documentation of a recipe's hyperparameters, grouped by section."""
    from kflow.recipe.overrides import resolve_recipe

    recipe, _ = resolve_recipe(spec)
    cls = type(recipe)
    lines = [f"{cls.name or cls.__name__}: {cls.description}", ""]
    specs = cls.hparam_specs()
    for group in ("model", "optimizer", "training", "data"):
        keys = [k for k, s in specs.items() if s.group == group]
        if not keys:
            continue
        lines.append(f"[{group}]")
        for key in keys:
            s = specs[key]
            search = f"  search: {_fmt_search(s.search)}" if s.search is not None else ""
            lines.append(f"  {key} = {_fmt_value(recipe.hparams[key])}")
            lines.append(f"      {s.doc} Allowed: {s.describe()}.{search}")
        lines.append("")
    lines.append("Override with --set KEY=VALUE (or GROUP.KEY=VALUE), or in a YAML file.")
    return "\n".join(lines)


def _fmt_search(search) -> str:
    """A declared search space in words: "8..128 (log)", "0.0..0.5 (step 0.1)", "a, b"."""
    from kflow.recipe.hparams import SearchRange

    if isinstance(search, SearchRange):
        text = f"{search.low}..{search.high}"
        if search.log:
            text += " (log)"
        if search.step is not None:
            text += f" (step {search.step})"
        return text
    if isinstance(search, (list, tuple)):
        return ", ".join(_fmt_value(v) for v in search)
    return _fmt_value(search)


def _fmt_value(value) -> str:
    """A value as it is written on the command line (`true`, not `True`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)
