"""`kflow lr-find RECIPE`: the learning-rate range test."""

from __future__ import annotations

import argparse

from kflow.cli.common import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "lr-find", help="suggest a learning rate (range test)",
        description="Train the recipe's model for a few steps with an exponentially growing "
        "learning rate, plot the loss against it, and suggest the rate where the loss falls "
        "fastest. The weights are restored afterwards; nothing else is written.",
    )
    add_recipe_args(p)
    p.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate (1e-7)")
    p.add_argument("--max-lr", type=float, default=10.0, help="last learning rate (10)")
    p.add_argument("--steps", type=int, default=100, help="number of steps (100)")
    p.add_argument("--plot", default="lr_find.png", help="plot file (default: lr_find.png)")
    p.set_defaults(func=run, needs_tensorflow=True)


def run(args: argparse.Namespace) -> int:
    from kflow.errors import ConfigError
    from kflow.insight.lr_finder import lr_find

    if not 0 < args.min_lr < args.max_lr:
        raise ConfigError(f"--min-lr must be > 0 and below --max-lr. Got --min-lr "
                          f"{args.min_lr} and --max-lr {args.max_lr}.")
    if args.steps < 5:
        raise ConfigError(f"--steps must be >= 5. Got {args.steps}.")
    result = lr_find(args.recipe, set_args=args.set_args, seed=args.seed, min_lr=args.min_lr,
                     max_lr=args.max_lr, steps=args.steps, plot_path=args.plot)
    print(result.summary())
    return 0
