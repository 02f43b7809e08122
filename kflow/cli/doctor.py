"""`kflow doctor RUN_DIR`: diagnose a run from the figures it logged."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "doctor", help="diagnose a run: vanishing/exploding gradients, LR, over/underfitting",
        description="Read a run directory (history.csv, grad_norms.csv, metrics.json, "
        "config.yaml) and say what went wrong and what to change: vanishing or exploding "
        "gradients, dead ReLUs, a learning rate that is too large or too small, overfitting, "
        "underfitting. Writes findings.json into the run directory.",
    )
    p.add_argument("run_dir", help="a run directory (runs/<recipe>-<hash>)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--no-write", action="store_true", help="do not (re)write findings.json")
    p.set_defaults(func=run, needs_tensorflow=False)


def run(args: argparse.Namespace) -> int:
    import json

    from kflow.insight.doctor import diagnose_run, format_findings, write_findings

    findings = diagnose_run(args.run_dir)
    if not args.no_write:
        write_findings(args.run_dir, findings)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2, default=float))
    else:
        print(format_findings(findings))
    return 0
