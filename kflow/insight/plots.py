"""Static plots of a run (matplotlib, Agg backend), as PNG bytes.

Each function takes plain data (as read by `kflow.run.read_run`) and
returns the PNG, or `None` when there is nothing to draw. Nothing here needs
a display, a server or TensorFlow.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from kflow.run import TOTAL, GradRows

__all__ = [
    "plot_learning_curves", "plot_gradient_norms", "plot_learning_rate", "plot_dead_units",
    "plot_confusion_matrix", "plot_lr_finder", "plot_compare", "history_metrics",
    "epoch_numbers",
]

#: Resolution of the embedded images.
DPI = 80
#: Layers named in a legend at most (the others are drawn, unnamed).
MAX_LEGEND = 12
_INSIGHT_PREFIXES = ("grad_norm/", "dead_relu/")
_NOT_METRICS = ("epoch", "learning_rate", "lr", "phase")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _log_axis(ax, axis: str = "y") -> None:
    """A log scale labelled "1e-03" (plain text: mathtext labels are slow to render)."""
    from matplotlib.ticker import LogFormatter

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(LogFormatter())
    target.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.5)))


def epoch_numbers(history: dict[str, list[float]], n: int | None = None) -> np.ndarray:
    """The 1-based epoch numbers of the first `n` rows of a history.

    From its `epoch` column when there is one (history.csv counts epochs
    from 1; the files of older runs counted from 0 and are shifted), else
    1, 2, ... in row order.

    Args:
        history: `{column: [value per epoch]}`, as `kflow.run.read_history` reads it.
        n: Rows wanted. Defaults to the length of the history's columns.
    """
    column = history.get("epoch")
    if n is None:
        n = max((len(v) for v in history.values()), default=0)
    if column and len(column) >= n and all(math.isfinite(e) for e in column[:n]):
        epochs = np.asarray(column[:n], dtype=float)
        shift = 1 if len(column) and min(column) == 0 else 0
        return (epochs + shift).astype(int)
    return np.arange(1, n + 1)


def _epoch_axis(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _margins(fig, *, left: float, bottom: float, top: float, right: float = 0.15,
             wspace: float = 0.2) -> None:
    """Fixed margins in inches (`tight_layout` would cost a second rendering pass)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wspace)


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def history_metrics(history: dict[str, list[float]]) -> list[str]:
    """Training metric names of a history (`loss` first), without `val_`/insight columns."""
    names = [k for k in history if not k.startswith("val_") and k not in _NOT_METRICS
             and not k.startswith(_INSIGHT_PREFIXES)]
    return sorted(names, key=lambda k: (k != "loss", k))


def phase_boundary(history: dict[str, list[float]]) -> int | None:
    """The first fine-tuning epoch of a transfer run (`phase` 1 -> 2), or `None`."""
    phase = history.get("phase") or []
    epochs = epoch_numbers(history, len(phase))
    for e, before, now in zip(epochs[1:], phase, phase[1:], strict=False):
        if before == 1 and now == 2:
            return int(e)
    return None


def _mark_phase(ax, history: dict[str, list[float]]) -> None:
    """A vertical line where fine-tuning starts (transfer runs)."""
    start = phase_boundary(history)
    if start is not None:
        ax.axvline(start - 0.5, color="0.4", lw=1, ls="-.", label=f"fine-tuning (epoch {start})")


def _log_if_wide(ax, values: list[float]) -> None:
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if len(finite) > 1 and max(finite) / min(finite) > 100:
        _log_axis(ax)


def plot_learning_curves(history: dict[str, list[float]]) -> bytes | None:
    """Loss and metrics per epoch, training (solid) vs validation (dashed)."""
    names = history_metrics(history)
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        train = history[name]
        epochs = epoch_numbers(history, len(train))
        ax.plot(epochs, train, "-o", ms=3, label="train", color="C0")
        values = list(train)
        if f"val_{name}" in history:
            val = history[f"val_{name}"]
            ax.plot(epochs[: len(val)], val, "--o", ms=3, label="validation", color="C1")
            values += list(val)
        bad = [e for e, v in zip(epochs, train, strict=True) if not math.isfinite(v)]
        if bad:
            ax.axvline(bad[0], color="red", lw=1, ls=":", label=f"NaN/Inf (epoch {bad[0]})")
        if name == "loss":
            _log_if_wide(ax, values)
        _mark_phase(ax, history)
        ax.set_title(name)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _margins(fig, left=0.9, bottom=0.55, top=0.35, wspace=0.25)
    return _png(fig)


def plot_gradient_norms(grads: GradRows) -> bytes | None:
    """Per-layer gradient norms and update/weight ratios over steps, and a heatmap.

    The line plots show the layers with weights (normalization layers are in
    the heatmap only); the first and last of them are drawn thicker.
    """
    if not grads:
        return None
    plt = _pyplot()
    layers = grads.layers
    lined = [n for n in layers if "Normalization" not in grads.kinds.get(n, "")] or layers
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2),
                             gridspec_kw={"width_ratios": [1.1, 1, 1.1]})
    cmap = plt.get_cmap("plasma")
    colors = [cmap(0.85 * i / max(1, len(lined) - 1)) for i in range(len(lined))]
    for ax, series, title in ((axes[0], grads.grad, "gradient L2 norm per layer"),
                              (axes[1], grads.ratio, "update / weight ratio per layer")):
        for i, layer in enumerate(lined):
            values = np.asarray(series[layer], dtype=float)
            edge = i in (0, len(lined) - 1)
            show = edge or len(lined) <= MAX_LEGEND
            ax.plot(grads.steps[layer], np.where(values > 0, values, np.nan),
                    lw=2.2 if edge else 1.0, color=colors[i], label=layer if show else None)
        if series is grads.grad and TOTAL in series:
            total = np.asarray(series[TOTAL], dtype=float)
            ax.plot(grads.steps[TOTAL], np.where(total > 0, total, np.nan), "k--", lw=1.2,
                    label="total")
        _log_axis(ax)
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                   ncol=min(4, len(lined) + 1), frameon=False)
    # Heatmap: layers (input at the top) x logged steps, log10 of the norm.
    steps = grads.steps[layers[0]]
    matrix = np.full((len(layers), len(steps)), np.nan)
    for i, layer in enumerate(layers):
        values = np.asarray(grads.grad[layer][: len(steps)], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            matrix[i, : len(values)] = np.where(values > 0, np.log10(values), np.nan)
    right = steps[-1] + 0.5 if len(steps) > 1 else steps[0] + 0.5
    image = axes[2].imshow(matrix, aspect="auto", cmap="magma", interpolation="nearest",
                           extent=(steps[0] - 0.5, right, len(layers) - 0.5, -0.5))
    axes[2].set_yticks(range(len(layers)))
    axes[2].set_yticklabels(layers if len(layers) <= 24 else [""] * len(layers), fontsize=7)
    axes[2].set_xlabel("optimizer step")
    axes[2].set_title("log10 gradient norm (input layer at top)")
    fig.colorbar(image, ax=axes[2], fraction=0.046, pad=0.04)
    _margins(fig, left=0.8, bottom=1.2, top=0.35, right=0.7, wspace=0.45)
    return _png(fig)


def plot_learning_rate(history: dict[str, list[float]]) -> bytes | None:
    """The learning rate per epoch."""
    lr = history.get("learning_rate") or history.get("lr")
    if not lr:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(epoch_numbers(history, len(lr)), lr, "-o", ms=3, color="C2")
    _epoch_axis(ax)
    ax.set_title("learning rate")
    finite = [v for v in lr if math.isfinite(v)]
    if finite and max(finite) == min(finite):  # constant: show it as a flat line
        ax.set_ylim(0, 2 * max(finite) or 1)
        ax.set_title(f"learning rate (constant {finite[0]:.3g})")
    _log_if_wide(ax, lr)
    _mark_phase(ax, history)
    ax.grid(alpha=0.3)
    _margins(fig, left=0.8, bottom=0.55, top=0.35)
    return _png(fig)


def plot_dead_units(history: dict[str, list[float]]) -> bytes | None:
    """Fraction of dead units per ReLU-family layer per epoch."""
    columns = {k[len("dead_relu/"):]: v for k, v in history.items() if k.startswith("dead_relu/")}
    if not columns:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for i, (name, values) in enumerate(columns.items()):
        epochs = epoch_numbers(history, len(values))
        probed = np.isfinite(np.asarray(values, dtype=float))  # short epochs skip probes
        ax.plot(epochs[probed], np.asarray(values, dtype=float)[probed], "-o", ms=3,
                label=name if i < MAX_LEGEND else None)
    ax.set_ylim(-0.02, 1.02)
    _epoch_axis(ax)
    ax.set_title("dead ReLU fraction (probe batch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _margins(fig, left=0.6, bottom=0.55, top=0.35)
    return _png(fig)


def plot_confusion_matrix(confusion: dict[str, Any]) -> bytes | None:
    """Counts of (true, predicted) classes, with the counts written in the cells."""
    if not confusion or not confusion.get("matrix"):
        return None
    plt = _pyplot()
    m = np.asarray(confusion["matrix"])
    labels = confusion.get("labels") or [str(i) for i in range(len(m))]
    size = min(7.0, 1.6 + 0.45 * len(m))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(m)))
    ax.set_yticks(range(len(m)))
    ax.set_xticklabels(labels, rotation=45 if max(map(len, labels)) > 3 else 0, fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = m.max() / 2 if m.size else 0
    for i in range(len(m)):
        for j in range(len(m)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > threshold else "black")
    ax.set_title(f"confusion matrix, {confusion.get('split', 'test')} split "
                 f"(accuracy {confusion.get('accuracy', float('nan')):.3f})")
    _margins(fig, left=0.9, bottom=0.8, top=0.4)
    return _png(fig)


def plot_lr_finder(lrs: list[float], losses: list[float], smoothed: list[float],
                   suggested: float | None, minimum: float | None) -> bytes:
    """Loss against learning rate (log axis) with the suggestion marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(lrs, losses, color="0.7", lw=1, label="loss per step")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="smoothed")
    if minimum:
        ax.axvline(minimum, color="C3", ls=":", label=f"minimum {minimum:.2e}")
    if suggested:
        ax.axvline(suggested, color="C2", ls="--", label=f"suggested {suggested:.2e}")
    _log_axis(ax, "x")
    finite = [v for v in smoothed if math.isfinite(v)]
    if finite:
        low, high = min(finite), finite[0]
        ax.set_ylim(low - 0.1 * abs(high - low + 1e-12), max(high, low) * 1.5 + 1e-12)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _margins(fig, left=0.8, bottom=0.6, top=0.35)
    return _png(fig)


def plot_compare(histories: dict[str, dict[str, list[float]]]) -> bytes | None:
    """Several runs' curves overlaid: one panel per metric, train solid, val dashed."""
    names: list[str] = []
    for h in histories.values():
        for name in history_metrics(h):
            if name not in names:
                names.append(name)
    if not names:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values: list[float] = []
        for i, (label, h) in enumerate(histories.items()):
            if name not in h:
                continue
            epochs = epoch_numbers(h, len(h[name]))
            ax.plot(epochs, h[name], "-", color=f"C{i % 10}", label=f"{label} train")
            values += list(h[name])
            if f"val_{name}" in h:
                ax.plot(epochs[: len(h[f'val_{name}'])], h[f"val_{name}"], "--",
                        color=f"C{i % 10}", label=f"{label} val")
                values += list(h[f"val_{name}"])
        if name == "loss":
            _log_if_wide(ax, values)
        ax.set_title(name)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _margins(fig, left=0.9, bottom=0.55, top=0.35, wspace=0.25)
    return _png(fig)
