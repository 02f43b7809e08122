"""`kflow inspect RECIPE`: activation statistics of the recipe's initialized model."""

from __future__ import annotations

import argparse

from kflow.cli.common import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect", help="activation statistics per layer of a recipe's initialized model",
        description="Build the recipe's model as `kflow train` would (data split, "
        "preprocessing fitted on the training split), without training it, run a probe batch "
        "of training samples through it and print, for each hidden activation layer, the "
        "mean, standard deviation and variance of its outputs, the fraction of zeros and of "
        "saturated tanh/sigmoid units: whether the initialization keeps the signal's spread "
        "through the depth. Nothing is written.",
    )
    add_recipe_args(p)
    p.add_argument("--samples", type=int, default=128,
                   help="probe batch size, taken from the training split (default 128)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=run, needs_tensorflow=True)


def run(args: argparse.Namespace) -> int:
    from kflow.errors import ConfigError
    from kflow.insight.activation_stats import recipe_activation_stats

    if args.samples < 2:
        raise ConfigError(f"--samples must be >= 2. Got {args.samples}.")
    stats = recipe_activation_stats(args.recipe, set_args=args.set_args, seed=args.seed,
                                    samples=args.samples)
    print(stats.to_json() if args.json else stats.table())
    return 0
