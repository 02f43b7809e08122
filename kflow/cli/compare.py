"""`kflow compare RUN_DIR...`: several runs side by side."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare runs: overlaid curves and a metrics table",
        description="Print a table of the runs' final metrics and of the hyperparameters "
        "that differ between them, and write an HTML page with their learning curves "
        "overlaid.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("--output", "-o", default="compare.html",
                   help="HTML file to write (default: compare.html)")
    p.set_defaults(func=run, needs_tensorflow=False)


def run(args: argparse.Namespace) -> int:
    from kflow.insight.compare import compare_runs

    result = compare_runs(args.run_dirs, output=args.output)
    print(result.table())
    print(f"\ncomparison: {result.html_path}")
    return 0
