"""`kflow compare`: several runs side by side (curves overlaid, a metrics table)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.run import Run, read_run

__all__ = ["Comparison", "compare_runs"]


@dataclass
class Comparison:
    """Runs compared.

    Attributes:
        columns: Table columns.
        rows: One dict per run, keyed by column.
        html_path: The HTML page written, if any.
    """

    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    html_path: Path | None = None

    def table(self) -> str:
        """The table as aligned plain text."""
        cells = [[_cell(row.get(c, "")) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        out = [line, "  ".join("-" * w for w in widths)]
        out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}" if sub != "name" else key] = v
        elif key != "kflow_version":
            flat[key] = value
    return flat


def _row(run: Run, label: str) -> dict[str, Any]:
    m = run.metrics
    row: dict[str, Any] = {"run": label, "recipe": run.config.get("recipe", "?"),
                           "epochs": m.get("epochs_run", len(run.history.get("loss", []))),
                           "best epoch": m.get("best_epoch", "")}
    for split in ("train", "val", "test"):
        for name, value in (m.get(split) or {}).items():
            row[f"{split} {name}"] = value
    if "train_seconds_this_session" in m:
        row["seconds"] = m["train_seconds_this_session"]
    return row


def compare_runs(run_dirs: list[str | Path], output: str | Path | None = "compare.html"
                 ) -> Comparison:
    """Compares runs: a table of final metrics and the hyperparameters that differ.

    Args:
        run_dirs: Two or more run directories (one works too).
        output: The HTML page to write (curves overlaid, the table).
            Defaults to "compare.html"; `None` writes none.

    Example:

    ```python
    cmp = kflow.insight.compare_runs(["runs/a", "runs/b"], output="a_vs_b.html")
    print(cmp.table())
    ```
    """
    runs = [read_run(d) for d in run_dirs]
    labels = []
    for run in runs:
        label = run.path.name
        while label in labels:
            label = f"{run.path.parent.name}/{label}"
        labels.append(label)
    flats = [_flat(run.config) for run in runs]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1 and k != "recipe"]
    rows = []
    for run, label, flat in zip(runs, labels, flats, strict=True):
        row = _row(run, label)
        row.update({k: flat.get(k, "") for k in differing})
        rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    result = Comparison(columns=columns, rows=rows)
    if output is not None:
        result.html_path = _write_html(Path(output), runs, labels, result)
    return result


def _write_html(path: Path, runs: list[Run], labels: list[str], cmp: Comparison) -> Path:
    from kflow.insight.plots import plot_compare
    from kflow.insight.report import CSS, embed_png
    from kflow.run import atomic_write_text

    png = plot_compare({label: run.history for label, run in zip(labels, runs, strict=True)})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cmp.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c, '')))}</td>" for c in cmp.columns)
        + "</tr>" for row in cmp.rows)
    links = "".join(
        f"<li><a href='{html.escape(run.files.report.resolve().as_uri())}'>"
        f"{html.escape(label)}</a></li>"
        for label, run in zip(labels, runs, strict=True) if run.files.report.is_file())
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>kflow compare</title>"
            f"<style>{CSS}</style></head><body><h1>kflow compare: {len(runs)} runs</h1>"
            "<h2>Learning curves</h2>" + (embed_png(png, "learning curves") or "<p>No history.</p>")
            + "<p class='note'>Solid: training, dashed: validation; one colour per run.</p>"
            f"<h2>Final metrics and differing hyperparameters</h2><table><tr>{head}</tr>{body}"
            "</table>" + (f"<h2>Reports</h2><ul>{links}</ul>" if links else "")
            + "</body></html>\n")
    atomic_write_text(path, page)
    return path
