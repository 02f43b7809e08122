"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

DEVICES_HELP = ("split the CPU into N logical devices, so that --strategy mirrored trains "
                "on N replicas without GPUs (as the tests do)")


def add_global_args(parser: argparse.ArgumentParser) -> None:
    """The options of `kflow` itself, given before the command (`kflow --devices 2 train`)."""
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and TensorFlow's logs")
    parser.add_argument("--devices", type=int, default=None, metavar="N", help=DEVICES_HELP)


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="registered name (digits-cnn), file.py[:Class], or YAML file")
    p.add_argument("--set", dest="set_args", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter (repeatable): --set dropout=0.3 "
                        "--set optimizer.learning_rate=3e-4")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.set_defaults(check_recipe_early=True)
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    # Also accepted after the command; SUPPRESS keeps a value given before it.
    p.add_argument("--devices", type=int, default=argparse.SUPPRESS, metavar="N",
                   help=DEVICES_HELP)


def check_recipe_early(args: argparse.Namespace) -> None:
    """Resolves a registered recipe and its `--set` values before TensorFlow starts.

    A misspelt recipe, hyperparameter or value is then reported in a
    fraction of a second rather than after TensorFlow's start-up (several
    seconds). Only what is free of user code is checked here: a registered
    name, or a YAML file whose `recipe:` is one. A recipe in a `.py` file or
    a module (named directly or by the YAML) is resolved once, later, since
    resolving it runs its code.

    Raises:
        kflow.errors.ConfigError: What the full run would report for the
            same recipe and settings.
    """
    spec = getattr(args, "recipe", None)
    if not getattr(args, "check_recipe_early", False) or not isinstance(spec, str):
        return
    from kflow.recipe.overrides import load_yaml, resolve_recipe

    if spec.endswith((".yaml", ".yml")):
        named = str(load_yaml(spec).get("recipe", ""))
        if ".py" in named or ":" in named:
            return
    elif ".py" in spec or ":" in spec:
        return
    resolve_recipe(spec, None, getattr(args, "set_args", ()) or ())
