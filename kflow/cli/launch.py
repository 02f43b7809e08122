"""`kflow train ... --workers N`: the command line side of `kflow.training.launch`."""

from __future__ import annotations

import argparse

__all__ = ["launch_from_cli", "worker_argv"]


def worker_argv(argv: list[str]) -> list[str]:
    """The command each worker runs: `argv` without `--workers N`, with the strategy set.

    `--strategy multi_worker` is added unless a strategy is given; another
    strategy than multi_worker or auto is an error (exit 2).
    """
    from kflow.errors import ConfigError

    out: list[str] = []
    skip = False
    strategy = None
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        if arg == "--strategy" and i + 1 < len(argv):
            strategy = argv[i + 1]
        elif arg.startswith("--strategy="):
            strategy = arg.split("=", 1)[1]
        out.append(arg)
    if strategy is None:
        out += ["--strategy", "multi_worker"]
    elif strategy not in ("multi_worker", "auto"):
        raise ConfigError(f"--workers runs the multi_worker strategy; got --strategy {strategy}.")
    return out


def launch_from_cli(args: argparse.Namespace) -> int:
    """Starts `args.workers` local workers running the same `kflow train` command."""
    import os

    from kflow.errors import ConfigError
    from kflow.training.launch import launch_workers

    if args.workers < 1:
        raise ConfigError(f"--workers must be an int >= 1. Got {args.workers} instead.")
    if os.environ.get("TF_CONFIG"):
        raise ConfigError("--workers starts its own workers; unset TF_CONFIG (it is set here).")
    return launch_workers(worker_argv(list(args.argv)), args.workers)
