"""`report.html`: one self-contained page per run (plots embedded as PNG).

Readable offline with no server: learning curves, per-layer gradient norms
over time, the learning rate, dead ReLUs, the doctor's findings, final
metrics, the confusion matrix on the test split and the resolved config.
"""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Any

import yaml

from kflow.insight.doctor import Finding, diagnose, read_findings
from kflow.run import Run, RunDir, read_run

__all__ = ["write_report", "render_report", "embed_png", "CSS"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:28px}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:6px 0}
.finding{border-left:6px solid #999;background:#fafafa;padding:8px 14px;margin:10px 0}
.finding.error{border-color:#c62828;background:#fdecea}
.finding.warning{border-color:#ef6c00;background:#fff4e5}
.finding.info{border-color:#2e7d32;background:#edf7ed}
.finding h3{margin:2px 0 6px 0;font-size:1.1em}.finding p{margin:4px 0}
.tag{font-size:.75em;text-transform:uppercase;letter-spacing:.05em;color:#555}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:.85em}
.row{display:flex;flex-wrap:wrap;gap:12px}.note{color:#666;font-size:.9em}
"""


def embed_png(png: bytes | None, alt: str) -> str:
    """An `<img>` tag with the PNG inlined as base64 ("" for `None`)."""
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    if isinstance(v, int):
        return str(v)
    return f"{v:.4f}" if math.isfinite(v) and 1e-3 <= abs(v) < 1e4 else f"{v:.3g}"


def _phases_html(history: dict[str, list[float]], metrics: dict[str, Any]) -> str:
    """A transfer run's two phases (`history.csv`'s `phase` column), or ""."""
    from kflow.insight.plots import phase_boundary

    if "phase" not in history:
        return ""
    tune = metrics.get("fine_tune") or {}
    start = phase_boundary(history)
    epochs = len(history["phase"])
    frozen = f"epochs 1-{start - 1}" if start else f"epochs 1-{epochs}"
    text = f"Transfer learning: backbone frozen in {frozen} (phase 1)"
    if start:
        layers = tune.get("fine_tune_layers") or 0
        text += (f"; fine-tuning starts at epoch {start} (phase 2: "
                 f"{'the top ' + str(layers) + ' backbone layers' if layers else 'all layers'} "
                 f"trainable, learning rate x {tune.get('fine_tune_lr_scale', '?')})")
    backbone = (metrics.get("transfer") or {}).get("backbone")
    if backbone:
        text += f". Backbone: {backbone}"
    return f"<p class='note'>{html.escape(text)}.</p>"


def _metrics_table(metrics: dict[str, Any]) -> str:
    splits = [s for s in ("train", "val", "test") if isinstance(metrics.get(s), dict)]
    if not splits:
        return "<p class='note'>No final metrics (the run did not finish).</p>"
    names: list[str] = []
    for s in splits:
        names += [k for k in metrics[s] if k not in names]
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>" + "".join(
            f"<td>{_num(metrics[s].get(n, ''))}</td>" for s in splits) + "</tr>" for n in names)
    head = "".join(f"<th>{s}</th>" for s in splits)
    facts = []
    for key in ("epochs_run", "best_epoch", "stopped_early", "train_seconds_this_session"):
        if key in metrics:
            facts.append(f"{key.replace('_', ' ')}: <b>{_num(metrics[key])}</b>")
    stop = metrics.get("stop_reason")
    return (f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"
            f"<p class='note'>{' &middot; '.join(facts)}</p>"
            + (f"<p class='note'>{html.escape(stop)}</p>" if stop else ""))


def _findings_html(findings: list[Finding]) -> str:
    out = []
    for f in findings:
        advice = "".join(f"<li>{html.escape(a)}</li>" for a in f.advice)
        out.append(
            f"<div class='finding {html.escape(f.severity)}'>"
            f"<span class='tag'>{html.escape(f.severity)} &middot; {html.escape(f.id)}</span>"
            f"<h3>{html.escape(f.title)}</h3>"
            f"<p><b>Seen:</b> {html.escape(f.evidence)}</p>"
            f"<p><b>Why it matters:</b> {html.escape(f.why)}</p>"
            + (f"<p><b>What to change:</b></p><ul>{advice}</ul>" if advice else "")
            + "</div>")
    return "".join(out) or "<p class='note'>No findings.</p>"


def _file_names(run: Run) -> str:
    """The run's data files the page is drawn from, as the run layout names them."""
    rd = run.files
    names = [p.name for p in (rd.history, rd.grad_norms, rd.findings, rd.metrics, rd.config)]
    return ", ".join(names) + f", {rd.tensorboard.name}/"


def render_report(run: Run, findings: list[Finding]) -> str:
    """The report of a run as an HTML string."""
    from kflow.insight import plots
    from kflow.insight.baselines import baselines_html

    cfg = run.config
    title = f"kflow report: {cfg.get('recipe', run.path.name)}"
    info = run.info
    sub = " &middot; ".join(html.escape(str(x)) for x in (
        run.path.name, info.get("task", ""), info.get("strategy", ""),
        f"{info.get('num_train', '?')} train / {info.get('num_val', '?')} val / "
        f"{info.get('num_test', '?')} test samples",
        f"batch {info.get('batch_size', '?')}, {info.get('steps_per_epoch', '?')} steps/epoch",
        f"status: {run.status.get('state', '?')}") if x)
    h = run.history
    sections = [
        f"<h1>{html.escape(title)}</h1><p class='sub'>{sub}</p>",
        "<h2>Doctor's findings</h2>", _findings_html(findings),
        "<h2>Final metrics</h2>", _metrics_table(run.metrics),
        baselines_html(run.metrics or {}),
        "<h2>Learning curves</h2>", _phases_html(h, run.metrics or {}),
        embed_png(plots.plot_learning_curves(h), "learning curves")
        or "<p class='note'>No history.</p>",
        "<h2>Gradient norms per layer</h2>",
        embed_png(plots.plot_gradient_norms(run.grads), "gradient norms")
        or "<p class='note'>No gradient norms were logged (grad_log_every=0?).</p>",
        "<p class='note'>Left: L2 norm of each layer's gradient at the logged steps (dashed: "
        "the whole model). Middle: how much each step changed the layer's weights relative "
        "to their norm (~1e-3 is typical; much smaller means the layer hardly learns). "
        "Right: the same norms as a heatmap; dark top rows over a bright bottom mean "
        "vanishing gradients.</p>",
        "<h2>Learning rate and dead units</h2><div class='row'>",
        embed_png(plots.plot_learning_rate(h), "learning rate")
        or "<p class='note'>No learning rate logged.</p>",
        embed_png(plots.plot_dead_units(h), "dead ReLU fraction"), "</div>",
    ]
    if run.confusion:
        sections += ["<h2>Confusion matrix</h2>",
                     embed_png(plots.plot_confusion_matrix(run.confusion), "confusion matrix")]
    export_section = RunDir(run.path).export_section
    if export_section.is_file():  # written by `kflow export`; kept on every re-render
        sections.append(export_section.read_text())
    sections += ["<h2>Resolved config</h2>",
                 f"<pre>{html.escape(yaml.safe_dump(cfg, sort_keys=False))}</pre>",
                 f"<p class='note'>Generated by kflow on {time.strftime('%Y-%m-%d %H:%M')}. "
                 f"Files: {_file_names(run)}.</p>"]
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")


def write_report(run_dir: str | Path, findings: list[Finding] | None = None) -> Path:
    """Writes `report.html` into a run directory (atomically) and returns its path.

    Args:
        run_dir: The run directory.
        findings: The doctor's findings. Defaults to those of `findings.json`,
            or a fresh diagnosis when there is none.

    Example:

    ```python
    path = kflow.insight.write_report("runs/digits-cnn-1a2b3c4d")
    ```
    """
    run = read_run(run_dir)
    if findings is None:
        findings = read_findings(run.path) or diagnose(run)
    rd = RunDir(run.path)
    rd.write_text(rd.report, render_report(run, findings))
    return rd.report
