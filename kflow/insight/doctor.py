"""The training doctor: diagnoses a run from the figures it logged.

`diagnose_run(run_dir)` reads `history.csv`, `grad_norms.csv`,
`metrics.json`, `run.json` and `config.yaml` and returns `Finding`s; each
says what was seen (numbers and epoch), why it matters and what to change,
in the lecture's terms. `kflow.train` writes them to `findings.json` at the
end of every run and `kflow doctor RUN_DIR` prints them.

The rules and their thresholds (module constants, so they can be read,
tested and tuned in one place):

| id                    | fires when                                                          |
|-----------------------|---------------------------------------------------------------------|
| `exploding_gradients` | the loss or a gradient norm is NaN/Inf; or the total gradient norm  |
|                       | spikes to >= `EXPLODING_SPIKE`x its median, or grows >=             |
|                       | `EXPLODING_GROWTH`x from the first to the last logged epoch; or the |
|                       | first layer's norm is >= `EXPLODING_RATIO`x the last's              |
| `vanishing_gradients` | the first weight layer's gradient norm is <= `VANISHING_RATIO`x the |
|                       | last layer's (median over logged steps), or <= `VANISHING_NORM`     |
|                       | (exact zeros are left to `dead_relus`: units that never activate)   |
| `dead_relus`          | a ReLU-family layer has >= `DEAD_RELU_FRACTION` dead units at the   |
|                       | last epoch (on the probe batch)                                     |
| `lr_too_large`        | the training loss ends above where it started (diverges), or rises  |
|                       | in >= `OSCILLATION_FRACTION` of the epochs without progress, or a   |
|                       | classifier ends above `ABOVE_CHANCE`x the chance-level loss after   |
|                       | rising, or after a first epoch >= `FIRST_EPOCH_BLOWUP`x chance      |
| `lr_too_small`        | the training loss falls by < `SMALL_IMPROVEMENT` over the run and   |
|                       | updates are < `UPDATE_RATIO_LOW` of the weights                     |
| `overfitting`         | the validation loss ends >= `OVERFIT_VAL_RISE` above its minimum    |
|                       | while the training loss kept falling, or train - val accuracy >=    |
|                       | `OVERFIT_ACCURACY_GAP`                                              |
| `underfitting`        | the training loss ends >= `UNDERFIT_LOSS_FRACTION` of the chance    |
|                       | level (first epoch's for regression) and is flat, with val close    |
| `worse_than_baseline` | the network's test score is worse than a scikit-learn baseline's    |
|                       | fitted on the same split (`kflow.insight.baselines`)                |
| `healthy`             | none of the above fired (not even as an `info` note)                |

"First"/"last" layer: the input-most and output-most layers with weights
in `grad_norms.csv`, skipping normalization layers.

Recurrent networks (a layer of `grad_norms.csv` named or kinded as an LSTM,
GRU or SimpleRNN, e.g. `lstm_0`, `rnn_0/simple_rnn_cell`, `bigru_0`; or a
`cell` setting in the config) get the recurrent remedies in the advice of
`exploding_gradients` and `vanishing_gradients`: backpropagation through
time multiplies the gradient by the same recurrent weights at every step,
so the cures are gradient clipping (exploding), LSTM/GRU instead of
SimpleRNN and shorter sequences. For them, a spike of the total gradient
norm to >= `EXPLODING_SPIKE_RECURRENT`x its median is already exploding.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kflow.run import TOTAL, GradRows, Run, RunDir, read_run

__all__ = [
    "Finding", "diagnose", "diagnose_run", "write_findings", "read_findings",
    "format_findings", "SEVERITIES",
    "VANISHING_RATIO", "VANISHING_NORM", "EXPLODING_RATIO", "EXPLODING_GROWTH",
    "DEAD_RELU_FRACTION", "OSCILLATION_FRACTION", "OSCILLATION_MIN_RISE",
    "SMALL_IMPROVEMENT", "UPDATE_RATIO_LOW", "OVERFIT_VAL_RISE", "OVERFIT_ACCURACY_GAP",
    "UNDERFIT_LOSS_FRACTION", "FLAT_IMPROVEMENT", "MIN_EPOCHS", "EXPLODING_SPIKE",
    "ABOVE_CHANCE", "EXPLODING_SPIKE_RECURRENT", "recurrent_layers",
]

SEVERITIES = ("error", "warning", "info")

#: First-layer / last-layer gradient norm at or below this: vanishing (3 orders of magnitude).
VANISHING_RATIO = 1e-3
#: A first-layer gradient norm at or below this is "near zero" whatever the last layer's.
VANISHING_NORM = 1e-7
#: First-layer / last-layer gradient norm at or above this: exploding toward the input.
EXPLODING_RATIO = 1e3
#: Total gradient norm of the last logged epoch / the first's at or above this: exploding.
EXPLODING_GROWTH = 1e2
#: Largest total gradient norm / the run's median at or above this: an exploding spike.
EXPLODING_SPIKE = 1e3
#: A layer with at least this fraction of dead units (last epoch) is flagged.
DEAD_RELU_FRACTION = 0.5
#: Fraction of epoch-to-epoch training-loss changes that are rises, at or above: oscillating.
OSCILLATION_FRACTION = 0.3
#: A rise counts for oscillation when it is at least this relative to the previous loss.
OSCILLATION_MIN_RISE = 0.05
#: Relative fall of the training loss over the run below this: the loss "barely moves".
SMALL_IMPROVEMENT = 0.02
#: Median update/weight ratio below this: steps too small to move the weights.
UPDATE_RATIO_LOW = 1e-5
#: Validation loss at the end this far (relative) above its minimum: rising.
OVERFIT_VAL_RISE = 0.10
#: Train accuracy - validation accuracy at or above this: a large gap.
OVERFIT_ACCURACY_GAP = 0.10
#: Final training loss at or above this fraction of the chance-level loss: high.
UNDERFIT_LOSS_FRACTION = 0.5
#: Relative improvement per epoch over the last epochs below this: flat.
FLAT_IMPROVEMENT = 0.01
#: Epochs needed before trends (oscillation, flat, rising) are judged.
MIN_EPOCHS = 3
#: A classifier whose final training loss is above this multiple of the chance-level
#: loss did worse than guessing: its steps diverged.
ABOVE_CHANCE = 1.2
#: A first epoch's mean training loss this many times the chance level: the first
#: steps threw the weights far off (with the last loss still above chance: too large).
FIRST_EPOCH_BLOWUP = 10.0

#: The same for a recurrent network, whose gradient "cliffs" (one step that multiplies the
#: gradient by the recurrent weights over the whole sequence) are the lecture's explosion.
#: Healthy recurrent runs stay within a few times their median (digits-rnn, SimpleRNN at
#: learning_rate=0.5 unclipped: 2.3x), and clipped runs log the clipped norms.
EXPLODING_SPIKE_RECURRENT = 1e2

#: Name tokens (split at `/`, `_`, digits) and Keras kinds of recurrent layers.
_RECURRENT_TOKENS = frozenset({"lstm", "gru", "rnn", "bilstm", "bigru", "birnn", "simplernn",
                               "convlstm"})
_RECURRENT_KINDS = frozenset({"LSTM", "GRU", "SimpleRNN", "RNN", "LSTMCell", "GRUCell",
                              "SimpleRNNCell", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D",
                              "ConvLSTM3D"})
#: Values of a `cell` (or `encoder`) setting that name a recurrent cell, and its Keras layer.
_CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "simple_rnn": "SimpleRNN",
               "simplernn": "SimpleRNN"}

_NORMALIZATION_KINDS = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                        "UnitNormalization", "Normalization")


@dataclass
class Finding:
    """One diagnosis.

    Attributes:
        id: Stable identifier (`vanishing_gradients`, `overfitting`...).
        severity: "error", "warning" or "info".
        title: One line.
        evidence: What was seen, with the numbers and the epoch.
        why: Why it matters.
        advice: What to change, most likely first (lecture terms, kflow
            hyperparameter names).
        epoch: The 1-based epoch the evidence points at, if any.
        data: The figures behind the evidence.
    """

    id: str
    severity: str
    title: str
    evidence: str
    why: str
    advice: list[str] = field(default_factory=list)
    epoch: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- helpers -------------------------------------------------------------------
def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e-3 and abs(x) < 1e4 else f"{x:.2e}"


def _sentence(parts: list[str]) -> str:
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[key if sub == "name" else sub] = v
        else:
            flat[key] = value
    return flat


def _name_tokens(name: str) -> set[str]:
    return {t for t in re.split(r"[^a-z]+", name.lower()) if t}


def recurrent_layers(layers: list[str], kinds: dict[str, str]) -> list[str]:
    """The recurrent layers among `grad_norms.csv`'s layers (by kind or by name).

    `rnn_0/simple_rnn_cell`, `lstm_0`, `bigru_1`, `forward_lstm_0` (Keras
    cells may be recorded with the kind `Layer`, so the name counts too).
    """
    return [name for name in layers
            if kinds.get(name, "") in _RECURRENT_KINDS or _name_tokens(name) & _RECURRENT_TOKENS]


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _weight_layers(grads: GradRows) -> list[str]:
    layers = [name for name in grads.layers
              if not any(k in grads.kinds.get(name, "") for k in _NORMALIZATION_KINDS)]
    return layers or list(grads.layers)


def _epoch_shift(grads: GradRows) -> int:
    """What to add to `grad_norms.csv` epochs to count from 1.

    Files count epochs from 1; files of older runs counted from 0, and
    always hold an epoch-0 row then (the first optimizer step is logged).
    """
    return 1 if any(0 in epochs for epochs in grads.epochs.values()) else 0


def _by_step(grads: GradRows, layer: str) -> dict[int, tuple[float, int]]:
    shift = _epoch_shift(grads)
    return {s: (g, e + shift) for s, g, e in zip(grads.steps[layer], grads.grad[layer],
                                                 grads.epochs[layer], strict=True)}


class _Context:
    """The run's figures, read once, for the rules."""

    def __init__(self, run: Run):
        self.run = run
        self.h = run.history
        self.cfg = _flat_config(run.config)
        self.loss = self.h.get("loss", [])
        self.val_loss = self.h.get("val_loss", [])
        self.epochs = len(self.loss)
        self.task = run.info.get("task", "")
        self.grads = run.grads

    def hp(self, key: str, default: Any = None) -> Any:
        return self.cfg.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.cfg

    @property
    def recurrent(self) -> list[str]:
        """The run's recurrent layers (from grad_norms.csv); `["<cell>"]` when only the
        config says so (a `cell` setting naming lstm/gru/rnn), `[]` for other networks."""
        if self.grads:
            found = recurrent_layers(list(self.grads.layers), self.grads.kinds)
            if found:
                return found
        cell = self.cell
        return [cell] if cell else []

    @property
    def cell(self) -> str | None:
        """The Keras recurrent layer the config selects (`LSTM`, `GRU`, `SimpleRNN`), if any."""
        for key in ("cell", "encoder"):
            value = self.cfg.get(key)
            if isinstance(value, str) and value.lower() in _CELL_NAMES:
                return _CELL_NAMES[value.lower()]
        if self.grads:  # from the layer names: rnn_0/simple_rnn_cell, lstm_0, bigru_0
            tokens = set().union(*(_name_tokens(n) for n in self.grads.layers))
            for token, cell in (("lstm", "LSTM"), ("gru", "GRU"), ("bilstm", "LSTM"),
                                ("bigru", "GRU"), ("rnn", "SimpleRNN"), ("birnn", "SimpleRNN"),
                                ("simplernn", "SimpleRNN")):
                if token in tokens:
                    return cell
        return None

    def lr_text(self) -> str:
        lr = self.hp("learning_rate")
        return f"learning_rate={_fmt(lr)}" if lr is not None else "the learning rate"


# -- advice in the lecture's terms ------------------------------------------------
_SCALED_INITS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal",
                 "lecun_uniform", "uniform_fan_in", "orthogonal")


def _init_text(c: _Context) -> str:
    """The run's kernel initialization when it is not scaled to the layer sizes ("" if it is)."""
    if c.hp("init_scale"):
        return f"N(0, {c.hp('init_scale')}^2) weights (--set init_scale=null)"
    init = c.hp("initializer")
    return f"{init} (--set initializer=...)" if init and init not in _SCALED_INITS else ""


def _recurrent_where(c: _Context) -> str:
    layers = c.recurrent
    names = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
    return f"a recurrent network ({names})"


def _advice_cell(c: _Context) -> str | None:
    """LSTM/GRU instead of SimpleRNN, when the run uses SimpleRNN (or says nothing)."""
    cell = c.cell
    if cell in ("LSTM", "GRU"):
        return None
    how = (" (--set cell=lstm or --set cell=gru)" if c.has("cell") else "")
    return (f"Use LSTM or GRU cells instead of SimpleRNN{how}: their gates add the state "
            "instead of multiplying it by the recurrent weights at every step, so the "
            "gradient survives long sequences.")


def _advice_shorter(c: _Context) -> str:
    window = c.hp("window")
    how = (f" (e.g. --set window={max(2, int(window) // 2)})"
           if isinstance(window, int) and window > 2 else "")
    return (f"Use shorter sequences{how}, or truncated backpropagation through time: the "
            "gradient is multiplied by the recurrent weights once per step, so fewer steps "
            "mean fewer factors.")


def _advice_clip_recurrent(c: _Context) -> str:
    clip = c.hp("global_clipnorm") or c.hp("clipnorm")
    if clip:
        key = "global_clipnorm" if c.hp("global_clipnorm") else "clipnorm"
        return (f"Clipping is on ({key}={_fmt(clip)}) and the run still blew up: clip lower "
                f"(--set {key}={_fmt(clip / 2)}) and lower the learning rate.")
    return ("Clip the gradients (--set global_clipnorm=1.0): in " + _recurrent_where(c)
            + " backpropagation through time multiplies the gradient by the same recurrent "
            "weights at every step, and clipping caps the step a spike can cause.")


def _advice_vanishing_recurrent(c: _Context) -> list[str]:
    tips = [t for t in (_advice_cell(c), _advice_shorter(c)) if t]
    if c.hp("scaling") == "none":
        tips.append("Normalize the inputs (--set scaling=standard): saturated tanh/sigmoid "
                    "gates pass almost no gradient.")
    return tips


def _advice_vanishing(c: _Context) -> list[str]:
    if c.recurrent:
        return _advice_vanishing_recurrent(c)
    tips = []
    act = c.hp("activation")
    if act in ("sigmoid", "tanh", "softsign", "hard_sigmoid"):
        tips.append(f"Use ReLU instead of {act} in the hidden layers (--set activation=relu): "
                    "its derivative is 1 for positive inputs, so the chain-rule product "
                    "does not shrink layer after layer.")
    init = _init_text(c)
    if init:
        tips.append(f"Use He initialization (--set initializer=he_normal) with ReLU, or "
                    f"Xavier (glorot_uniform) with sigmoid/tanh, instead of {init}: weights "
                    "that are too small shrink the gradient at every layer.")
    if c.hp("batch_norm") == "none":
        tips.append("Add Batch Normalization (--set batch_norm=before): it keeps the "
                    "activations well scaled, not too large or too small.")
    if c.has("skip_connections") and not c.hp("skip_connections"):
        tips.append("Add skip connections (--set skip_connections=true): the gradient "
                    "takes the shortcut instead of being multiplied through every layer.")
    elif not c.has("skip_connections"):
        tips.append("Use skip connections (residual blocks, as in ResNets) so gradients "
                    "bypass layers.")
    if c.hp("scaling") == "none":
        tips.append("Normalize the inputs (--set scaling=standard).")
    if not tips:
        tips.append("Use fewer layers, or ReLU + He initialization + BatchNorm.")
    return tips


def _advice_exploding(c: _Context) -> list[str]:
    lr = c.hp("learning_rate")
    if c.recurrent:
        tips = [_advice_clip_recurrent(c)]
        tips.append(f"Use a smaller learning rate (e.g. --set learning_rate={_fmt(lr / 10)})"
                    if lr else "Use a smaller learning rate.")
        tips += [t for t in (_advice_cell(c), _advice_shorter(c)) if t]
        return tips
    tips = [f"Use a smaller learning rate (e.g. --set learning_rate={_fmt(lr / 10)})"
            if lr else "Use a smaller learning rate."]
    if not c.hp("global_clipnorm") and not c.hp("clipnorm"):
        tips.append("Clip the gradients (--set global_clipnorm=1.0): a step can then never "
                    "be larger than the clip value times the learning rate.")
    init = _init_text(c)
    if init:
        tips.append(f"Use He (ReLU) or Xavier (sigmoid/tanh) initialization instead of "
                    f"{init}: large weights amplify the gradient at every layer.")
    else:
        tips.append("Check the initial weights: He (ReLU) or Xavier (sigmoid/tanh) "
                    "initialization keeps them neither too large nor too small.")
    if c.hp("batch_norm") == "none":
        tips.append("Add Batch Normalization (--set batch_norm=before).")
    if c.hp("scaling") == "none":
        tips.append("Normalize the inputs (--set scaling=standard): large raw values give "
                    "large gradients.")
    return tips


_WHY_RECURRENT = (" In a recurrent network the depth is the sequence: backpropagation "
                  "through time multiplies the gradient by the same recurrent weights once "
                  "per step, so it grows or shrinks like a power of those weights.")


# -- rules ------------------------------------------------------------------------
def _rule_exploding(c: _Context) -> Finding | None:
    non_finite = [i for i, v in enumerate(c.loss) if not math.isfinite(v)]
    nan_stop = c.run.metrics.get("nan_stop") or {}
    evidence, epoch, data = [], None, {}
    if nan_stop.get("what") == "weights":  # the loss stayed finite, the weights did not
        epoch = nan_stop.get("epoch")
        where = f" of {nan_stop['variable']}" if nan_stop.get("variable") else ""
        evidence.append(f"the weights{where} became {nan_stop.get('value', 'nan')} in epoch "
                        f"{epoch} and training was stopped")
        data["non_finite_weights_epoch"] = epoch
    elif nan_stop or non_finite:
        epoch = nan_stop.get("epoch") or (non_finite[0] + 1)
        value = nan_stop.get("value", c.loss[non_finite[0]] if non_finite else math.nan)
        where = f"epoch {epoch}" + (f", step {nan_stop['step']}" if nan_stop.get("step") else "")
        evidence.append(f"the training loss became {value} at {where}"
                        + (" and training was stopped" if nan_stop else ""))
        data["non_finite_loss_epoch"] = epoch
    g = c.grads
    if g:
        total = g.grad.get(TOTAL, [])
        bad = [i for i, v in enumerate(total) if not math.isfinite(v)]
        if bad and not evidence:
            epoch = g.epochs[TOTAL][bad[0]] + _epoch_shift(g)
            evidence.append(f"the total gradient norm was {total[bad[0]]} at step "
                            f"{g.steps[TOTAL][bad[0]]} (epoch {epoch})")
        finite = [(v, i) for i, v in enumerate(total) if math.isfinite(v)]
        if len(finite) >= 3:
            median = float(np.median([v for v, _ in finite]))
            peak, at = max(finite)
            spike = EXPLODING_SPIKE_RECURRENT if c.recurrent else EXPLODING_SPIKE
            if median > 0 and peak / median >= spike:
                epoch = epoch or g.epochs[TOTAL][at] + _epoch_shift(g)
                data["spike"] = peak / median
                evidence.append(
                    f"the total gradient norm reached {_fmt(peak)} at step {g.steps[TOTAL][at]} "
                    f"(epoch {g.epochs[TOTAL][at] + _epoch_shift(g)}), {_fmt(peak / median)}x "
                    "its median "
                    f"({_fmt(median)})")
        first_epoch, last_epoch = _epoch_medians(g, TOTAL)
        if first_epoch and last_epoch and first_epoch[1] > 0:
            growth = last_epoch[1] / first_epoch[1]
            data["total_norm_growth"] = growth
            if growth >= EXPLODING_GROWTH:
                epoch = epoch or last_epoch[0]
                evidence.append(
                    f"the total gradient norm grew {_fmt(growth)}x, from {_fmt(first_epoch[1])} "
                    f"(epoch {first_epoch[0]}) to {_fmt(last_epoch[1])} (epoch {last_epoch[0]})")
        ratio = _layer_ratio(g)
        if ratio is not None:
            first, last, median, r_epoch = ratio
            data["first_last_ratio"] = median
            if median >= EXPLODING_RATIO:
                epoch = epoch or r_epoch
                evidence.append(
                    f"the gradient norm of the first layer ({first}) is {_fmt(median)}x that "
                    f"of the last ({last}) (median over the logged steps): it is amplified "
                    "on its way back to the input")
    if not evidence:
        return None
    return Finding(
        id="exploding_gradients", severity="error",
        title="Exploding gradients" + (" (NaN/Inf loss)" if "non_finite_loss_epoch" in data
                                       else " (NaN/Inf weights)"
                                       if "non_finite_weights_epoch" in data else ""),
        evidence=_sentence(evidence),
        why="When gradients are multiplied by large weights and derivatives at every layer "
            "they grow exponentially with depth; the updates w <- w - eta * grad then "
            "overshoot, the loss diverges and numbers overflow to Inf/NaN."
            + (_WHY_RECURRENT if c.recurrent else ""),
        advice=_advice_exploding(c), epoch=epoch,
        data={**data, **({"recurrent_layers": c.recurrent} if c.recurrent else {})},
    )


def _epoch_medians(g: GradRows, layer: str) -> tuple[tuple[int, float] | None, ...]:
    """(epoch, median norm) of the first and the last logged epochs (finite values)."""
    shift = _epoch_shift(g)
    per_epoch: dict[int, list[float]] = {}
    for e, v in zip(g.epochs.get(layer, []), g.grad.get(layer, []), strict=True):
        if math.isfinite(v):
            per_epoch.setdefault(e, []).append(v)
    if len(per_epoch) < 2:
        return None, None
    first, last = min(per_epoch), max(per_epoch)
    return ((first + shift, float(np.median(per_epoch[first]))),
            (last + shift, float(np.median(per_epoch[last]))))


def _layer_ratio(g: GradRows) -> tuple[str, str, float, int] | None:
    """(first layer, last layer, median first/last norm ratio, last epoch), or None."""
    layers = _weight_layers(g)
    if len(layers) < 2:
        return None
    first, last = layers[0], layers[-1]
    a, b = _by_step(g, first), _by_step(g, last)
    ratios, epochs = [], []
    for step, (ga, e) in a.items():
        gb = b.get(step, (math.nan, e))[0]
        if math.isfinite(ga) and math.isfinite(gb) and gb > 0 and ga > 0:
            ratios.append(ga / gb)
            epochs.append(e)
    if not ratios:
        return None
    return first, last, float(np.median(ratios)), max(epochs)


def _rule_vanishing(c: _Context) -> Finding | None:
    g = c.grads
    ratio = _layer_ratio(g)
    if ratio is None:
        return None
    first, last, median, epoch = ratio
    first_norms = [v for v in _finite(g.grad[first]) if v > 0]  # exact 0: dead units
    last_norms = _finite(g.grad[last])
    med_first = float(np.median(first_norms)) if first_norms else math.nan
    med_last = float(np.median(last_norms)) if last_norms else math.nan
    near_zero = math.isfinite(med_first) and med_first <= VANISHING_NORM
    if not (median <= VANISHING_RATIO or near_zero):
        return None
    orders = -math.log10(max(median, 1e-300))
    return Finding(
        id="vanishing_gradients", severity="error" if orders >= 5 or near_zero else "warning",
        title="Vanishing gradients",
        evidence=(f"The gradient norm of the first layer ({first}) is {_fmt(med_first)}, "
                  f"{_fmt(median)}x that of the last layer ({last}, {_fmt(med_last)}): "
                  f"{orders:.1f} orders of magnitude smaller (medians over "
                  f"{len(first_norms)} logged steps up to epoch {epoch})."),
        why="Backpropagation multiplies the gradient by each layer's weights and activation "
            "derivative; when these are small (sigmoid/tanh saturate, small initial "
            "weights) the product shrinks toward 0, so w_new ~ w_old: the early layers "
            "barely learn and training slows down or stops."
            + (_WHY_RECURRENT if c.recurrent else ""),
        advice=_advice_vanishing(c), epoch=epoch,
        data={"first_layer": first, "last_layer": last, "first_norm": med_first,
              "last_norm": med_last, "ratio": median,
              **({"recurrent_layers": c.recurrent} if c.recurrent else {})},
    )


def _rule_dead_relus(c: _Context) -> Finding | None:
    columns = {k[len("dead_relu/"):]: v for k, v in c.h.items() if k.startswith("dead_relu/")}
    if not columns or not c.epochs:
        return None
    last, when = {}, 0
    for name, values in columns.items():  # the last probed epoch (it may skip epochs)
        probed = [i for i, v in enumerate(values) if math.isfinite(v)]
        if probed:
            last[name] = values[probed[-1]]
            when = max(when, probed[-1] + 1)
    bad = {name: f for name, f in last.items() if f >= DEAD_RELU_FRACTION}
    if not bad:
        return None
    worst = max(bad, key=bad.get)
    lr = c.hp("learning_rate")
    act = c.hp("activation")
    leaky = " / ".join(a for a in ("leaky_relu", "elu") if a != act)
    return Finding(
        id="dead_relus", severity="warning", title="Dead ReLUs",
        evidence=(f"At epoch {when}, {len(bad)} of {len(last)} ReLU-family layers have "
                  f">= {DEAD_RELU_FRACTION:.0%} dead units on the probe batch; worst: "
                  f"{worst} with {bad[worst]:.0%} of its units never active."),
        why="A ReLU unit whose input is negative for every sample outputs 0 and passes no "
            "gradient back, so it never recovers: the layer loses capacity.",
        advice=[
            (f"Use a smaller learning rate (e.g. --set learning_rate={_fmt(lr / 3)}): large "
             "steps push units into the dead region." if lr else "Use a smaller learning rate."),
            "Use He initialization (--set initializer=he_normal).",
            "Use BatchNorm before the activation (--set batch_norm=before)"
            + (", or a variant that keeps a gradient for x < 0 (--set activation="
               f"{leaky})." if leaky else "."),
        ],
        epoch=when, data={"dead_fraction": bad},
    )


def _rule_lr_too_large(c: _Context) -> Finding | None:
    loss = _finite(c.loss)
    if len(loss) < 2:
        return None
    lr = c.lr_text()
    tips = [
        (f"Use a smaller learning rate (e.g. --set learning_rate={_fmt(c.hp('learning_rate') / 10)}"
         ")" if c.hp("learning_rate") else "Use a smaller learning rate") +
        "; `kflow lr-find RECIPE` suggests one.",
        "Use a schedule that lowers the step size over time (--set lr_schedule=cosine) or a "
        "warm-up (--set warmup_epochs=2).",
        "Clip the gradients (--set global_clipnorm=1.0).",
    ]
    why = ("The step size eta in w <- w - eta * dLoss/dw is so large that each step jumps "
           "over the valley's bottom to the other side, higher up: the loss oscillates or "
           "grows instead of going downhill.")
    chance = _chance_loss(c) if c.task in ("multiclass", "binary") else None
    blew_up = chance is not None and loss[0] > FIRST_EPOCH_BLOWUP * chance
    if chance and loss[-1] > ABOVE_CHANCE * chance and (loss[-1] > min(loss) or blew_up):
        start = (f"; the first epoch's loss was {_fmt(loss[0])}, "
                 f"{_fmt(loss[0] / chance)}x the chance level" if blew_up else "")
        return Finding(
            id="lr_too_large", severity="error",
            title="Learning rate too large: worse than guessing",
            evidence=(f"The training loss ended at {_fmt(loss[-1])} (epoch {len(loss)}), above "
                      f"the chance level {_fmt(chance)} (lowest: {_fmt(min(loss))}){start}, "
                      f"with {lr}."),
            why=why, advice=tips, epoch=len(loss),
            data={"last_loss": loss[-1], "chance_loss": chance},
        )
    if loss[-1] > loss[0]:
        peak = int(np.argmax(loss))
        return Finding(
            id="lr_too_large", severity="error", title="Learning rate too large: loss diverges",
            evidence=(f"The training loss rose from {_fmt(loss[0])} (epoch 1) to "
                      f"{_fmt(loss[-1])} (epoch {len(loss)}), peaking at {_fmt(loss[peak])} "
                      f"(epoch {peak + 1}) with {lr}."),
            why=why, advice=tips, epoch=len(loss),
            data={"first_loss": loss[0], "last_loss": loss[-1]},
        )
    if len(loss) <= MIN_EPOCHS:
        return None
    diffs = np.diff(loss) / np.maximum(np.abs(loss[:-1]), 1e-12)
    rises = diffs >= OSCILLATION_MIN_RISE
    fraction = float(rises.mean())
    half = len(loss) // 2
    stalled = min(loss[half:]) >= 0.5 * min(loss[:half])  # no real progress in the 2nd half
    if fraction < OSCILLATION_FRACTION or not stalled:
        return None
    epochs = [int(i) + 2 for i in np.flatnonzero(rises)]
    return Finding(
        id="lr_too_large", severity="warning", title="Learning rate too large: loss oscillates",
        evidence=(f"The training loss went up in {int(rises.sum())} of {len(diffs)} epochs "
                  f"(at epochs {', '.join(map(str, epochs[:8]))}) with {lr}."),
        why=why, advice=tips, epoch=epochs[-1], data={"rise_fraction": fraction},
    )


def _rule_lr_too_small(c: _Context, vanishing: bool) -> Finding | None:
    loss = _finite(c.loss)
    if len(loss) < MIN_EPOCHS or vanishing or loss[0] <= 0:
        return None
    improvement = (loss[0] - loss[-1]) / abs(loss[0])
    if abs(improvement) >= SMALL_IMPROVEMENT:  # it moved (up or down)
        return None
    ratios = _finite(c.grads.ratio.get(TOTAL, [])) if c.grads else []
    median_ratio = float(np.median(ratios)) if ratios else None
    if median_ratio is not None and median_ratio >= UPDATE_RATIO_LOW:
        return None
    lr = c.hp("learning_rate")
    evidence = (f"The training loss only went from {_fmt(loss[0])} to {_fmt(loss[-1])} in "
                f"{len(loss)} epochs ({improvement:.1%}) with {c.lr_text()}")
    if median_ratio is not None:
        evidence += (f"; each step changed the weights by {_fmt(median_ratio)} of their norm "
                     f"(median update/weight ratio; ~1e-3 is typical)")
    return Finding(
        id="lr_too_small", severity="warning", title="Learning rate too small: loss barely moves",
        evidence=evidence + ".",
        why="With a tiny step size each update w <- w - eta * grad moves the weights almost "
            "nowhere: walking downhill in steps too small to get anywhere in the time given.",
        advice=[
            (f"Use a larger learning rate (e.g. --set learning_rate={_fmt(lr * 10)})"
             if lr else "Use a larger learning rate") + "; `kflow lr-find RECIPE` suggests one.",
            "Use an adaptive optimizer (--set optimizer=adam).",
        ],
        epoch=len(loss), data={"improvement": improvement, "update_ratio": median_ratio},
    )


def _rule_overfitting(c: _Context) -> Finding | None:
    loss, val = c.loss, c.val_loss
    evidence, data, epoch = [], {}, None
    n = min(len(loss), len(val))
    if n > MIN_EPOCHS and all(math.isfinite(v) for v in val[:n] + loss[:n]):
        best = int(np.argmin(val[:n]))
        rise = (val[n - 1] - val[best]) / max(abs(val[best]), 1e-12)
        if (rise >= OVERFIT_VAL_RISE and n - 1 - best >= MIN_EPOCHS and loss[n - 1] < loss[best]):
            epoch = best + 1
            evidence.append(
                f"the validation loss was lowest at epoch {best + 1} ({_fmt(val[best])}) and "
                f"rose {rise:.0%} to {_fmt(val[n - 1])} by epoch {n}, while the training loss "
                f"kept falling ({_fmt(loss[best])} -> {_fmt(loss[n - 1])})")
            data.update(best_epoch=best + 1, val_rise=rise)
    m = c.run.metrics
    acc_train = (m.get("train") or {}).get("accuracy")
    acc_val = (m.get("val") or {}).get("accuracy")
    if acc_train is not None and acc_val is not None:
        gap = acc_train - acc_val
        data["accuracy_gap"] = gap
        if gap >= OVERFIT_ACCURACY_GAP:
            evidence.append(f"the final model's accuracy is {acc_train:.3f} on the training "
                            f"split but {acc_val:.3f} on the validation split (gap {gap:.3f})")
    if not evidence:
        return None
    # Early stopping undoes a rising validation loss (it restores the best epoch), not a
    # gap the final model still has: only the former makes this a note.
    handled = bool(m.get("stopped_early")) and data.get("accuracy_gap", 0) < OVERFIT_ACCURACY_GAP
    best = m.get("best_epoch") or data.get("best_epoch")
    tips = []
    if c.has("dropout"):
        tips.append(f"Add dropout (--set dropout={max(0.2, (c.hp('dropout') or 0) + 0.2):.1f}): "
                    "randomly turning off units forces robust features instead of memorizing.")
    if c.has("regularizer"):
        tips.append("Add L2 (or L1) weight regularization (--set regularizer=l2 --set "
                    "regularizer_strength=1e-3): a penalty lambda * sum(w^2) keeps weights "
                    "small and the model simpler.")
    if not c.hp("early_stopping", False):
        tips.append("Use early stopping (--set early_stopping=true): stop when the "
                    "validation loss stops improving and keep the best weights.")
    tips.append("Use data augmentation or more data, or a smaller model (fewer units/layers).")
    why = ("The model learns the training data too well, noise included: it performs well "
           "on the samples it saw and worse on new ones.")
    if handled:
        why += (" Early stopping restored the weights of "
                + (f"epoch {best}" if best else "the best epoch")
                + ", before the rise, so the final model is not affected; the changes below "
                "would let it learn longer before it overfits.")
    return Finding(
        id="overfitting", severity="info" if handled else "warning",
        title="Overfitting" + (f" (handled: early stopping restored epoch {best})" if handled
                               and best else " (handled: early stopping restored the best "
                               "epoch)" if handled else ""),
        evidence=_sentence(evidence),
        why=why, advice=tips, epoch=epoch, data=data,
    )


def _chance_loss(c: _Context) -> float | None:
    classes = c.run.info.get("class_names") or []
    if c.task == "multiclass" and len(classes) > 1:
        return math.log(len(classes))
    if c.task == "binary":
        return math.log(2)
    loss = _finite(c.loss)
    return loss[0] if loss else None


def _rule_underfitting(c: _Context, skip: bool) -> Finding | None:
    loss, val = _finite(c.loss), _finite(c.val_loss)
    reference = _chance_loss(c)
    if skip or len(loss) < MIN_EPOCHS or not reference:
        return None
    level = loss[-1] / reference
    tail = loss[-MIN_EPOCHS:]
    per_epoch = (tail[0] - tail[-1]) / max(abs(tail[0]), 1e-12) / (len(tail) - 1)
    val_close = not val or val[-1] <= loss[-1] * 1.5
    if level < UNDERFIT_LOSS_FRACTION or per_epoch >= FLAT_IMPROVEMENT or not val_close:
        return None
    what = "the chance level" if c.task in ("multiclass", "binary") else "the first epoch's"
    tips = ["Use a model with more capacity (more units or layers).",
            "Train longer (--set epochs=...) if the loss is still going down slowly."]
    if (c.hp("dropout") or 0) > 0 or c.hp("regularizer", "none") != "none":
        tips.append("Use less regularization (lower dropout / regularizer_strength).")
    tips.append("Check the learning rate (`kflow lr-find RECIPE`) and that the inputs are "
                "normalized and informative.")
    return Finding(
        id="underfitting", severity="warning", title="Underfitting: both losses high and flat",
        evidence=(f"After {len(loss)} epochs the training loss is {_fmt(loss[-1])}, "
                  f"{level:.0%} of {what} ({_fmt(reference)})"
                  + (f", validation {_fmt(val[-1])}" if val else "")
                  + f", and it improved by only {per_epoch:.1%} per epoch over the last "
                  f"{len(tail)} epochs."),
        why="The model is too simple, trained too little, or its features are not "
            "informative: it performs poorly on training and new data alike.",
        advice=tips, epoch=len(loss), data={"loss_fraction": level, "per_epoch": per_epoch},
    )


def _model_unscales_target(run: Run) -> bool | None:
    """Whether the saved model ends in `Normalization(invert=True)` (a scaled target);
    `None` when the model file cannot be read."""
    import zipfile

    path = run.files.model
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    layers = config.get("config", {}).get("layers", [])
    return any(layer.get("class_name") == "Normalization"
               and layer.get("config", {}).get("invert") for layer in layers)


def _rule_unscaled_target(c: _Context) -> Finding | None:
    """A regression target far from unit scale that the model does not scale."""
    stats = c.run.info.get("target_stats") or {}
    if c.task != "regression" or not stats:
        return None
    mean, std = float(stats.get("mean", 0.0)), float(stats.get("std", 1.0))
    if 0.1 <= std <= 10.0 and abs(mean) <= 3.0 * max(std, 1.0):
        return None
    if _model_unscales_target(c.run) is not False:
        return None
    return Finding(
        id="unscaled_target", severity="warning", title="Regression target not scaled",
        evidence=(f"The target has mean {_fmt(mean)} and standard deviation {_fmt(std)} on "
                  "the training split, and the model's head predicts it unscaled."),
        why="A network's output starts near 0 with spread about 1; a target far from that "
            "scale takes many epochs to reach and dominates the loss, so the model can "
            "answer nearly the same value for every row.",
        advice=["Scale the target on the training split and invert it inside the model: "
                "end the head with `Recipe.scaled_target_head` (kflow's default regression "
                "head does), or a `keras.layers.Normalization(invert=True)` layer."],
        data={"target_mean": mean, "target_std": std},
    )


def diagnose(run: Run) -> list[Finding]:
    """Applies the doctor's rules to a run's figures.

    Args:
        run: The run's files, as read by `kflow.run.read_run`.

    Returns:
        The findings, most severe first; a single `healthy` finding when no
        rule fired (a problem that was handled during the run, such as
        overfitting undone by early stopping, is an `info` note, and a run
        with a note is not called healthy).
    """
    c = _Context(run)
    findings: list[Finding] = []
    exploding = _rule_exploding(c)
    vanishing = _rule_vanishing(c)
    too_large = _rule_lr_too_large(c)
    too_small = _rule_lr_too_small(c, vanishing is not None)
    # Underfitting is judged only when no gradient or step-size problem explains the losses.
    explained = any(f is not None for f in (exploding, vanishing, too_large, too_small))
    from kflow.insight.baselines import baseline_finding

    baseline = baseline_finding(run.metrics or {}, c.task)
    for finding in (exploding, vanishing, _rule_dead_relus(c), too_large, too_small,
                    _rule_overfitting(c), _rule_underfitting(c, skip=explained),
                    _rule_unscaled_target(c),
                    Finding(**baseline) if baseline else None):
        if finding is not None:
            findings.append(finding)
    if not findings:
        parts = [f"{c.epochs} epoch{'' if c.epochs == 1 else 's'}"]
        if c.loss:
            parts.append(f"training loss {_fmt(c.loss[0])} -> {_fmt(c.loss[-1])}")
        if c.val_loss:
            parts.append(f"validation loss {_fmt(min(_finite(c.val_loss) or [math.nan]))} "
                         "at best")
        ratio = _layer_ratio(c.grads) if c.grads else None
        if ratio is not None:
            parts.append(f"first/last layer gradient norm ratio {_fmt(ratio[2])}")
        findings.insert(0, Finding(
            id="healthy", severity="info", title="Healthy run",
            evidence="No problem found: " + "; ".join(parts) + ".",
            why="Gradients reach the first layers without vanishing or exploding and the "
                "loss goes down: nothing here needs changing.",
            advice=[], epoch=None,
        ))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order.get(f.severity, 9))
    return findings


def diagnose_run(run_dir: str | Path) -> list[Finding]:
    """Reads a run directory and diagnoses it (see `diagnose`).

    Example:

    ```python
    for finding in kflow.insight.diagnose_run("runs/digits-mlp-1a2b3c4d"):
        print(finding.severity, finding.title, finding.evidence)
    ```
    """
    return diagnose(read_run(run_dir))


def write_findings(run_dir: str | Path, findings: list[Finding]) -> Path:
    """Writes `findings.json` (atomically) and returns its path."""
    rd = RunDir(run_dir)
    rd.write_text(rd.findings, json.dumps([f.to_dict() for f in findings], indent=2,
                                          default=float) + "\n")
    return rd.findings


def read_findings(run_dir: str | Path) -> list[Finding]:
    """Reads `findings.json` of a run directory ([] when missing)."""
    path = RunDir(run_dir).findings
    if not path.is_file():
        return []
    return [Finding(**item) for item in json.loads(path.read_text())]


def format_findings(findings: list[Finding]) -> str:
    """The findings as plain text, as `kflow doctor` prints them."""
    blocks = []
    for f in findings:
        lines = [f"[{f.severity}] {f.title}", f"  seen:    {f.evidence}", f"  why:     {f.why}"]
        for i, tip in enumerate(f.advice):
            lines.append(f"  {'do:' if i == 0 else '':<8} - {tip}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
