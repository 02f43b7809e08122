"""`kflow report RUN_DIR`: (re)generate a run's report.html."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="(re)write a run's report.html",
        description="Write RUN_DIR/report.html, a self-contained page (no server needed): "
        "learning curves, per-layer gradient norms, learning rate, the doctor's findings, "
        "final metrics, the confusion matrix and the resolved config.",
    )
    p.add_argument("run_dir", help="a run directory (runs/<recipe>-<hash>)")
    p.set_defaults(func=run, needs_tensorflow=False)


def run(args: argparse.Namespace) -> int:
    from kflow.insight.doctor import diagnose_run, write_findings
    from kflow.insight.report import write_report

    findings = diagnose_run(args.run_dir)
    write_findings(args.run_dir, findings)
    print(f"report: {write_report(args.run_dir, findings)}")
    return 0
