"""`kflow train`: train a recipe end to end."""

from __future__ import annotations

import argparse

from kflow.cli.common import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train, evaluate and save a recipe",
        description="Train a recipe, evaluate it on the held-out test split and write a run "
        "directory (config.yaml, history.csv, metrics.json, model.keras, checkpoints, "
        "TensorBoard logs). Re-running the same command after a crash resumes it.",
    )
    add_recipe_args(p)
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs=N")
    p.add_argument("--run-dir", default=None,
                   help="run directory (default: runs/<recipe>-<config hash>)")
    p.add_argument("--runs-root", default="runs", help="parent of default run directories")
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "default", "mirrored", "tpu", "multi_worker"],
                   help="tf.distribute strategy (auto: TPU, else several GPUs, else default)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run, needs_tensorflow=True)


def run(args: argparse.Namespace) -> int:
    from kflow.training.engine import train

    result = train(
        args.recipe, set_args=args.set_args, epochs=args.epochs, run_dir=args.run_dir,
        runs_root=args.runs_root, seed=args.seed, strategy=args.strategy,
        overwrite=args.overwrite, verbose=0 if args.quiet else "auto",
    )
    test = result.metrics.get("test", {})
    if "accuracy" in test:
        print(f"test accuracy: {test['accuracy']:.4f}")
    print(f"run directory: {result.run_dir}")
    return 0
