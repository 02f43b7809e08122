"""The export report: `export.json`, `export.html`, and a section of the run's report.

The export writes its section to `RUN_DIR/export/report_section.html`; the
run's `report.html` includes that file each time it is rendered (by the
export, by `kflow report`, or at the end of a resumed run), so the section is
never lost when the report is rewritten.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

__all__ = ["render_table", "render_section", "render_page", "attach_to_run_report"]


def _fmt(value: Any, kind: str = "") -> str:
    if value is None:
        return "n/a"
    if kind == "size":
        return f"{value / 1024:.1f} KiB"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "ms":
        return f"{value:.3f} ms"
    if kind == "ratio":
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_table(report: dict[str, Any]) -> list[list[str]]:
    """Rows (header first) of the TFLite variants side by side."""
    tfl = report.get("tflite") or {}
    variants = tfl.get("variants") or {}
    metric = tfl.get("metric", "accuracy")
    pct = metric == "accuracy"
    rows = [["variant", "size", "size vs float32", metric, "vs reference", "mean latency",
             "gate"]]
    keras = (tfl.get("keras") or {}).get(metric)
    rows.append(["keras", "", "", _fmt(keras, "pct" if pct else ""), "", "", ""])
    for name, v in variants.items():
        delta = v.get("drop_points") if pct else v.get("increase_percent")
        delta_s = ("n/a" if delta is None else
                   f"{0.0 - delta:+.2f} pts" if pct else f"{delta + 0.0:+.2f}%")
        rows.append([name, _fmt(v.get("size_bytes"), "size"),
                     _fmt(v.get("size_ratio_vs_float32"), "ratio"),
                     _fmt(v.get(metric), "pct" if pct else ""), delta_s,
                     _fmt(v.get("mean_latency_ms"), "ms"),
                     "pass" if v.get("passed") else ("skipped" if v.get("passed") is None
                                                      else "FAIL")])
    return rows


def render_section(report: dict[str, Any]) -> str:
    """The export section (an HTML fragment)."""
    e = html.escape
    parts = ["<section id=\"kflow-export\">", "<h2>Export</h2>"]
    sm = report.get("saved_model")
    if sm:
        parts.append(
            f"<p>SavedModel <code>{e(str(sm.get('version_dir', '')))}</code>: max abs "
            f"difference vs Keras {sm['max_abs_diff']:.3g} on {sm['rows']} rows "
            f"(tolerance {sm['tolerance']:g}); {sm.get('warmup_requests', 0)} warmup "
            "requests.</p>")
    if (report.get("tflite") or {}).get("variants"):
        rows = render_table(report)
        parts.append("<table>")
        parts.append("<tr>" + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>")
        for row in rows[1:]:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        tfl = report["tflite"]
        parts.append(f"<p>Reference: {e(str(tfl.get('reference')))}; gate: "
                     f"{e(str(tfl.get('gate')))}; preprocessing: "
                     f"{e(str(tfl.get('preprocessing')))}.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def render_page(report: dict[str, Any]) -> str:
    title = f"kflow export: {report.get('name', '')}"
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>"
            f"</head><body>\n{render_section(report)}\n</body></html>\n")


def attach_to_run_report(run_dir: str | Path, report: dict[str, Any]) -> str:
    """Re-renders the run's `report.html`, which includes the export section; returns a
    sentence saying what was done."""
    from kflow.insight.report import write_report
    from kflow.run import RunDir

    rd = RunDir(run_dir)
    if not rd.report.is_file():
        return (f"no {rd.report.name} in the run directory; the export section is in "
                f"{rd.export_html}")
    write_report(rd.path)
    return f"added the Export section to {rd.report}"
