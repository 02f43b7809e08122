"""What a search leaves: `trials.csv`, `report.html` and `best.yaml`.

The trials table has one row per trial: id, status, score, the epoch budget
and the epochs trained, time, the worker, the reason of a failure, then one
column per searched hyperparameter (empty where a conditional one did not
apply). The HTML report adds a summary, the score of each trial in order,
and the hyperparameters that mattered most: the score against each numeric
one, and per value of each choice, ranked by a simple importance measure
(|Spearman correlation| for numbers, the share of the score's variance
explained by the choice for choices).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kflow.run import atomic_write_text
from kflow.tuning.objective import Objective
from kflow.tuning.space import SearchSpace

__all__ = ["TrialRow", "write_trials_csv", "write_report", "write_best_yaml", "importance"]

_BASE_COLUMNS = ("trial_id", "status", "score", "epochs", "epochs_run", "best_epoch",
                 "seconds", "worker", "reason")


@dataclass
class TrialRow:
    """One trial, as the table and the report show it."""

    trial_id: str
    status: str
    score: float | None
    values: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    epochs_run: float | None = None
    epochs_spent: int | None = None
    best_epoch: float | None = None
    seconds: float | None = None
    worker: str = ""
    reason: str = ""

    @property
    def completed(self) -> bool:
        return self.status == "COMPLETED" and self.score is not None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_trials_csv(path: str | Path, rows: Sequence[TrialRow], space: SearchSpace) -> None:
    """Writes the trials table (atomically)."""
    names = list(space.dims)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*_BASE_COLUMNS, *names])
    for r in rows:
        writer.writerow([
            r.trial_id, r.status.lower(), _fmt(r.score), _fmt(r.epochs), _fmt(r.epochs_run),
            _fmt(r.best_epoch), _fmt(r.seconds), r.worker, r.reason,
            *(_fmt(r.values.get(n)) for n in names),
        ])
    atomic_write_text(path, buf.getvalue())


def write_best_yaml(path: str | Path, config: Mapping[str, Any], *, trial_id: str,
                    objective: Objective, score: float, command: str,
                    fixed: Mapping[str, Any] | None = None) -> None:
    """Writes the best configuration as a YAML file `kflow train` accepts as is."""
    import yaml

    header = (
        f"# The best configuration of `{command}`:\n"
        f"# trial {trial_id}, {objective.name} = {score:.6g}"
        f"{f' (mean of {objective.cv} folds)' if objective.cv else ''}.\n"
        "# Train it again with: kflow train best.yaml\n"
    )
    if fixed:
        settings = ", ".join(f"{k}={str(v).lower()}" for k, v in fixed.items())
        header += (f"# Every trial ran with {settings}; they are kept here so the training "
                   "repeats the trial.\n")
    atomic_write_text(path, header + yaml.safe_dump(dict(config), sort_keys=False))


# -- importance -----------------------------------------------------------------------
def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # average ranks of ties
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _adjusted_scores(rows: Sequence[TrialRow]) -> np.ndarray:
    """Scores minus the mean score of the same epoch budget (Hyperband's budgets
    differ; a value should not look good only because it got more epochs)."""
    scores = np.array([r.score for r in rows], dtype=float)
    budgets = np.array([r.epochs or 0 for r in rows])
    out = scores.copy()
    for b in np.unique(budgets):
        mask = budgets == b
        out[mask] -= scores[mask].mean()
    return out if len(np.unique(budgets)) > 1 else scores


def importance(rows: Sequence[TrialRow], space: SearchSpace) -> dict[str, float]:
    """A rough importance in [0, 1] of each searched hyperparameter over completed trials."""
    done = [r for r in rows if r.completed]
    result: dict[str, float] = {}
    if len(done) < 3:
        return result
    score = _adjusted_scores(done)
    for name, dim in space.dims.items():
        pairs = [(r.values[name], s) for r, s in zip(done, score, strict=True)
                 if r.values.get(name) is not None]
        if len(pairs) < 3:
            continue
        values = [p[0] for p in pairs]
        y = np.array([p[1] for p in pairs], dtype=float)
        if len({str(v) for v in values}) < 2 or np.ptp(y) == 0:
            result[name] = 0.0
            continue
        if dim.is_range:
            x = np.array(values, dtype=float)
            rx, ry = _ranks(x), _ranks(y)
            rho = np.corrcoef(rx, ry)[0, 1]
            result[name] = 0.0 if math.isnan(rho) else float(abs(rho))
        else:
            groups: dict[str, list[float]] = {}
            for v, s in zip(values, y, strict=True):
                groups.setdefault(str(v), []).append(s)
            total = float(((y - y.mean()) ** 2).sum())
            between = sum(len(g) * (np.mean(g) - y.mean()) ** 2 for g in groups.values())
            result[name] = float(between / total) if total > 0 else 0.0
    return dict(sorted(result.items(), key=lambda kv: -kv[1]))


# -- plots ----------------------------------------------------------------------------
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _score_plot(rows: Sequence[TrialRow], objective: Objective) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.4))
    ax = fig.add_subplot()
    done = [(i, r) for i, r in enumerate(rows) if r.completed]
    failed = [i for i, r in enumerate(rows) if not r.completed]
    if done:
        xs = [i for i, _ in done]
        ys = [r.score for _, r in done]
        budgets = [r.epochs or 0 for _, r in done]
        if len(set(budgets)) > 1:
            points = ax.scatter(xs, ys, c=budgets, cmap="viridis", s=28, zorder=3)
            fig.colorbar(points, ax=ax, label="epoch budget")
        else:
            ax.scatter(xs, ys, s=28, zorder=3, label="trial")
        best, best_line = None, []
        for r in rows:
            if r.completed and objective.better(r.score, best):
                best = r.score
            best_line.append(best if best is not None else np.nan)
        ax.step(range(len(rows)), best_line, where="post", color="tab:orange",
                label="best so far")
        ax.legend(loc="best", fontsize=8)
    if failed:
        low = ax.get_ylim()[0]
        ax.scatter(failed, [low] * len(failed), marker="x", color="tab:red", zorder=4,
                   label="failed")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("trial (in order)")
    ax.set_ylabel(objective.name + (" (CV mean)" if objective.cv else ""))
    ax.grid(alpha=0.3)
    return _png(fig)


def _hparam_plot(rows: Sequence[TrialRow], space: SearchSpace, name: str,
                 objective: Objective, weight: float) -> str:
    from matplotlib.figure import Figure

    dim = space.dims[name]
    done = [r for r in rows if r.completed and r.values.get(name) is not None]
    fig = Figure(figsize=(4.2, 3.2))
    ax = fig.add_subplot()
    if dim.is_range:
        x = [float(r.values[name]) for r in done]
        ax.scatter(x, [r.score for r in done], s=24)
        if dim.log:
            ax.set_xscale("log")
    else:
        labels = [str(v) for v in dim.values]
        groups = [[r.score for r in done if str(r.values[name]) == lab] for lab in labels]
        keep = [i for i, g in enumerate(groups) if g]
        if keep:
            ax.boxplot([groups[i] for i in keep], positions=range(len(keep)), widths=0.5)
            rng = np.random.default_rng(0)
            for pos, i in enumerate(keep):
                jitter = rng.uniform(-0.12, 0.12, len(groups[i]))
                ax.scatter(pos + jitter, groups[i], s=16, alpha=0.7, zorder=3)
            ax.set_xticks(range(len(keep)), [labels[i] for i in keep])
    ax.set_xlabel(name)
    ax.set_ylabel(objective.name)
    ax.set_title(f"{name} (importance {weight:.2f})", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)


# -- HTML -----------------------------------------------------------------------------
_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.l { text-align: left; }
tr.best td { background: #e7f6e7; font-weight: 600; } tr.failed td { color: #a33; }
.plots img { margin: 4px; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 1px 4px; }
"""


def write_report(
    path: str | Path,
    rows: Sequence[TrialRow],
    *,
    space: SearchSpace,
    objective: Objective,
    summary: Mapping[str, Any],
    best_id: str | None,
    top: int = 6,
) -> None:
    """Writes `report.html`: summary, plots (PNG embedded) and the trials table."""
    e = html.escape
    names = list(space.dims)
    weights = importance(rows, space)
    title = e(str(summary.get("title", "kflow tune")))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{title}</h1>", "<table>"]
    for key, value in summary.items():
        if key != "title":
            parts.append(f"<tr><th>{e(str(key))}</th><td class='l'>{e(str(value))}</td></tr>")
    parts.append("</table><h2>Search space</h2><ul>")
    parts += [f"<li><code>{e(line)}</code></li>" for line in space.describe()]
    parts.append("</ul><h2>Score of each trial</h2>")
    png = _score_plot(rows, objective)
    parts.append(f"<img alt='score vs trial' src='data:image/png;base64,{png}'>")
    if weights:
        parts.append("<h2>Most important hyperparameters</h2><p>Importance: |Spearman "
                     "correlation| with the score for numbers, share of the score's variance "
                     "explained for choices" + (
                         "; scores compared within the same epoch budget"
                         if len({r.epochs for r in rows if r.completed}) > 1 else "")
                     + ". A rough guide from few trials, not a proof.</p><div class='plots'>")
        for name in list(weights)[:top]:
            png = _hparam_plot(rows, space, name, objective, weights[name])
            parts.append(f"<img alt='{e(name)}' src='data:image/png;base64,{png}'>")
        parts.append("</div>")
    parts.append("<h2>Trials</h2><table><tr>")
    header = ["trial", "status", objective.name, "epochs", "epochs run", "best epoch",
              "seconds", "worker", *names, "reason"]
    parts += [f"<th>{e(h)}</th>" for h in header]
    parts.append("</tr>")
    for r in rows:
        cls = "best" if r.trial_id == best_id else ("failed" if not r.completed else "")
        cells = [r.trial_id, r.status.lower(), _fmt(r.score), _fmt(r.epochs),
                 _fmt(r.epochs_run), _fmt(r.best_epoch), _fmt(r.seconds), r.worker,
                 *(_fmt(r.values.get(n)) for n in names)]
        parts.append(f"<tr class='{cls}'>" + "".join(f"<td>{e(c)}</td>" for c in cells)
                     + f"<td class='l'>{e(r.reason)}</td></tr>")
    parts.append("</table></body></html>\n")
    atomic_write_text(path, "\n".join(parts))
