"""Arguments shared by several commands."""

from __future__ import annotations

import argparse


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="registered name (digits-cnn), file.py[:Class], or YAML file")
    p.add_argument("--set", dest="set_args", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter (repeatable): --set dropout=0.3 "
                        "--set optimizer.learning_rate=3e-4")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
