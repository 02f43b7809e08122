"""How `kflow.train` plugs training insight in: callbacks and end-of-run files.

The trainer builds an `InsightHooks`, places `hooks.named_callbacks()` by its
`CALLBACK_ORDER` (before the history CSV and TensorBoard, so they see the logs
these add), merges
`hooks.extra_metrics()` into `metrics.json`, and calls `hooks.finish(...)`
once the run directory is complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kflow.run import RunDir

__all__ = ["InsightHooks", "wrap_model"]


def wrap_model(model: Any, grad_log_every: int) -> Any:
    """The recipe's model as an `InsightModel` when gradient logging is on."""
    if not grad_log_every:
        return model
    from kflow.insight.insight_model import as_insight_model

    return as_insight_model(model, grad_log_every)


class InsightHooks:
    """The insight pieces of one training run.

    Args:
        run_dir: The run directory, or `None` when nothing is saved.
        grad_log_every: The recipe's `grad_log_every` (0: gradient logging,
            dead-unit probing and the report's gradient plots are off).
        probe_x: Training inputs for the dead-ReLU probe batch.
        log: Prints one line (the engine's `kflow:` printer).
    """

    def __init__(self, run_dir: str | Path | None, grad_log_every: int, probe_x: Any = None,
                 log: Callable[[str], Any] | None = print):
        from kflow.insight.lr_logger import LearningRateLogger
        from kflow.insight.nan_guard import NanGuard

        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log = log
        self.nan_guard = NanGuard(log=log)
        self._named: list[tuple[str, Any]] = [("nan_guard", self.nan_guard),
                                              ("lr_logger", LearningRateLogger())]
        if grad_log_every:
            from kflow.insight.dead_units import DeadUnitMonitor
            from kflow.insight.grad_logger import GradientNormLogger

            if probe_x is not None:
                self._named.append(("dead_units", DeadUnitMonitor(probe_x)))
            rd = RunDir(self.run_dir) if self.run_dir is not None else None
            self._named.append(("grad_norms", GradientNormLogger(
                csv_path=rd.grad_norms if rd else None,
                tensorboard_dir=rd.tensorboard / "train" if rd else None,
            )))
        from kflow.insight.progbar import CompactProgbar

        self._named.append(("progress", CompactProgbar()))

    def named_callbacks(self) -> list[tuple[str, Any]]:
        """`(slot, callback)` pairs; the trainer orders them by its `CALLBACK_ORDER`."""
        return list(self._named)

    @property
    def callbacks(self) -> list[Any]:
        return [cb for _, cb in self._named]

    def extra_metrics(self) -> dict[str, Any]:
        """What `metrics.json` records about a NaN stop (`{}` when there was none)."""
        guard = self.nan_guard
        if not guard.message:
            return {}
        return {"stop_reason": guard.message, "nan_stop": guard.stop_info()}

    def finish(self, model: Any, splits: Any, batch_size: int = 256) -> None:
        """Writes `confusion_matrix.json`, `findings.json` and `report.html`.

        Never fails the run: a problem is printed as one line instead.
        """
        if self.run_dir is None:
            return
        start = time.perf_counter()
        try:
            from kflow.insight.confusion import confusion_matrix
            test = getattr(splits, "test", None)
            if test is not None and test.task in ("multiclass", "binary"):
                if getattr(test, "rows", 0) is None:  # a hashed streamed split: the whole split
                    cm = test.confusion_matrix(model, max(batch_size, 256))
                else:
                    cm = confusion_matrix(model, test.x, test.y, test.task, test.class_names,
                                          batch_size=max(batch_size, 256))
                if cm is not None:
                    RunDir(self.run_dir).write_json(RunDir(self.run_dir).confusion, cm)
            self.report()
        except Exception as exc:  # noqa: BLE001 - insight must not lose a finished run
            if self.log:
                self.log(f"could not write the report: {type(exc).__name__}: {exc}")
            return
        if self.log:
            self.log(f"report: {RunDir(self.run_dir).report} "
                     f"({time.perf_counter() - start:.1f}s)")

    def report(self) -> None:
        """Runs the doctor, writes `findings.json` and `report.html`, prints a summary."""
        from kflow.insight.doctor import diagnose_run, write_findings
        from kflow.insight.report import write_report

        findings = diagnose_run(self.run_dir)
        write_findings(self.run_dir, findings)
        write_report(self.run_dir, findings)
        if self.log:
            for f in findings:
                self.log(f"doctor: [{f.severity}] {f.title}: {f.evidence}")
