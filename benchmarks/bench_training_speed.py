"""Training speed of a kflow recipe vs. the same model in plain Keras and in PyTorch.

For each recipe the SAME model (`recipe.build_model(train_split)`, same data
splits, same optimizer, loss and metrics) is trained three ways, side by side
in one run:

* plain Keras: `model.compile(..., steps_per_execution=1)` with Keras defaults,
  then `model.fit(x_numpy, y_numpy, batch_size=32, validation_data=(xv, yv))`;
* kflow: `kflow.train(...)` itself, i.e. its tf.data pipeline, compile settings,
  op determinism and all its per-epoch callbacks (resumable backup, early
  stopping, best checkpoint, CSV history, TensorBoard) writing a run directory;
* PyTorch (if `import torch` works): the same architecture as a hand-written
  training loop over a `DataLoader(TensorDataset(...), shuffle=True)`, Adam
  lr 1e-3, batch 32, validated every epoch.

Each (recipe, variant, repeat) runs in its own Python process: op determinism
is process-wide in TensorFlow, and a fresh process gives every variant the same
start. Throughput is steady-state training samples/second: the wall time of
every epoch after the first one (tracing/compilation), validation and callbacks
included, median over the repeats. The variants run interleaved, in a rotating
order, so that noise from other work on the machine hits them alike. Test
accuracy after the same number of epochs shows the speed is not bought with
accuracy (kflow restores the weights of its best validation epoch at the end).

Usage:

    python benchmarks/bench_training_speed.py
    python benchmarks/bench_training_speed.py --epochs 10 --repeats 3 \\
        --recipes digits-mlp,digits-cnn --no-torch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("keras", "kflow", "torch")
LABELS = {"keras": "plain Keras (fit on NumPy, spe=1)", "kflow": "kflow.train",
          "torch": "PyTorch loop (DataLoader)"}
BATCH_SIZE = 32


# ---------------------------------------------------------------------------
# Workers: each trains one variant in a fresh process and prints one JSON line.


def _recipe_and_splits(name: str, seed: int):
    from kflow.recipe.overrides import resolve_recipe
    from kflow.train.engine import prepare

    recipe, _ = resolve_recipe(name, {}, ())
    recipe._seed = seed
    _, splits = prepare(recipe, seed)
    return recipe, splits


def _keras_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of each epoch, from its start to the end of all callbacks' epoch end.

        Add it last: its `on_epoch_end` then runs after every other callback's.
        """

        def __init__(self):
            super().__init__()
            self.starts: list[float] = []
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.starts.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.starts[-1])

    return EpochTimer()


def run_keras(name: str, epochs: int, seed: int) -> dict:
    """Plain Keras: the recipe's model, Keras defaults, fit on NumPy arrays."""
    import keras

    from kflow.train.engine import build_optimizer_for

    keras.utils.set_random_seed(seed)
    recipe, splits = _recipe_and_splits(name, seed)
    tr, va, te = splits.train, splits.val, splits.test
    model = recipe.build_model(tr)
    model.compile(
        optimizer=build_optimizer_for(recipe, math.ceil(len(tr) / BATCH_SIZE)),
        loss=recipe.loss(tr.task), metrics=recipe.metrics(tr.task), steps_per_execution=1,
    )
    timer = _keras_timer()
    model.fit(tr.x, tr.y, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(va.x, va.y),
              callbacks=[timer], verbose=0)
    test = model.evaluate(te.x, te.y, verbose=0, return_dict=True)
    return {"epoch_seconds": timer.seconds, "num_train": len(tr),
            "test_accuracy": float(test["accuracy"]), "epochs_run": len(timer.seconds)}


def run_kflow(name: str, epochs: int, seed: int) -> dict:
    """kflow: `kflow.train` exactly as a user calls it (run directory, callbacks)."""
    from kflow.recipe.overrides import resolve_recipe
    from kflow.train.engine import train

    recipe, _ = resolve_recipe(name, {}, ())
    # Early stopping stays on (its per-epoch cost is part of kflow's); a patience of
    # at least `epochs` only makes sure every variant trains the same number of epochs.
    patience = max(int(recipe.hparams["patience"]), epochs)
    timer = _keras_timer()
    with tempfile.TemporaryDirectory(prefix="kflow-bench-") as tmp:
        run = train(name, epochs=epochs, seed=seed, run_dir=Path(tmp) / "run", verbose=0,
                    set_args=[f"patience={patience}"], callbacks=[timer])
        num_train = json.loads((run.run_dir / "run.json").read_text())["num_train"]
    return {"epoch_seconds": timer.seconds, "num_train": num_train,
            "test_accuracy": float(run.metrics["test"]["accuracy"]),
            "epochs_run": int(run.metrics["epochs_run"])}


def _torch_model(recipe, train):
    """The recipe's architecture in PyTorch (digits-mlp and digits-cnn)."""
    import numpy as np
    import torch
    from torch import nn

    h = recipe.hparams
    if h.get("activation", "relu") != "relu" or h.get("scaling") != "standard":
        raise NotImplementedError("the PyTorch mirror supports relu + standard scaling only")
    x = np.asarray(train.x, dtype="float32")
    axes = tuple(range(x.ndim - 1))
    mean, std = x.mean(axis=axes), np.sqrt(x.var(axis=axes)).clip(min=1e-7)
    bn = h.get("batch_norm", "before")
    if bn == "after":
        raise NotImplementedError("the PyTorch mirror supports batch_norm=before/none")
    dropout = h.get("dropout", 0.0)

    def he_normal(layer):  # Keras' he_normal: truncated normal, stddev sqrt(2 / fan_in)
        fan_in = layer.weight[0].numel()
        std_ = math.sqrt(2.0 / fan_in) / 0.87962566103423978
        nn.init.trunc_normal_(layer.weight, std=std_, a=-2 * std_, b=2 * std_)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        return layer

    def block(linear, norm):
        layers = [he_normal(linear)]
        if bn == "before":
            layers.append(norm)
        layers.append(nn.ReLU())
        return layers

    class Standardize(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("std", torch.from_numpy(std))

        def forward(self, t):
            return (t - self.mean) / self.std

    class ChannelsFirst(nn.Module):
        def forward(self, t):  # NHWC (Keras) -> NCHW (PyTorch)
            return t.permute(0, 3, 1, 2)

    class ChannelsLast(nn.Module):
        def forward(self, t):  # NCHW -> NHWC
            return t.permute(0, 2, 3, 1)

    layers: list[nn.Module] = [Standardize()]
    if recipe.name == "digits-mlp":
        if h["skip_connections"]:
            raise NotImplementedError("the PyTorch mirror has no skip connections")
        width = x.shape[1]
        for _ in range(h["hidden_layers"]):
            layers += block(nn.Linear(width, h["units"], bias=bn != "before"),
                            nn.BatchNorm1d(h["units"], eps=1e-3, momentum=0.01))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h["units"]
    elif recipe.name == "digits-cnn":
        layers.append(ChannelsFirst())
        channels, size = x.shape[-1], x.shape[1]
        for stage in range(h["stages"]):
            f = h["filters"] * 2**stage
            for _ in range(2):
                layers += block(nn.Conv2d(channels, f, 3, padding="same", bias=bn != "before"),
                                nn.BatchNorm2d(f, eps=1e-3, momentum=0.01))
                channels = f
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers.append(ChannelsLast())  # flatten in Keras' NHWC order
        layers.append(nn.Flatten())
        layers += block(nn.Linear(channels * size * size, h["dense_units"], bias=bn != "before"),
                        nn.BatchNorm1d(h["dense_units"], eps=1e-3, momentum=0.01))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h["dense_units"]
    else:
        raise NotImplementedError(f"no PyTorch mirror of {recipe.name}")
    head = nn.Linear(width, train.num_classes)
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    layers.append(head)  # logits; the softmax is in the loss
    return nn.Sequential(*layers)


def run_torch(name: str, epochs: int, seed: int) -> dict:
    """A hand-written PyTorch training loop, as a typical user writes it."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    recipe, splits = _recipe_and_splits(name, seed)
    tr, va, te = splits.train, splits.val, splits.test
    if tr.task != "multiclass":
        raise NotImplementedError("the PyTorch mirror handles multiclass recipes only")
    model = _torch_model(recipe, tr)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.hparams["learning_rate"], eps=1e-7)

    def tensors(split):
        return (torch.as_tensor(split.x, dtype=torch.float32),
                torch.as_tensor(split.y, dtype=torch.long))

    train_loader = DataLoader(TensorDataset(*tensors(tr)), batch_size=BATCH_SIZE, shuffle=True)
    val_loader = DataLoader(TensorDataset(*tensors(va)), batch_size=256)
    test_loader = DataLoader(TensorDataset(*tensors(te)), batch_size=256)

    def evaluate(loader):
        model.eval()
        correct = total = 0
        loss = 0.0
        with torch.no_grad():
            for xb, yb in loader:
                out = model(xb)
                loss += F.cross_entropy(out, yb, reduction="sum").item()
                correct += (out.argmax(1) == yb).sum().item()
                total += len(yb)
        return loss / total, correct / total

    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for xb, yb in train_loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        evaluate(val_loader)
        seconds.append(time.perf_counter() - start)
    return {"epoch_seconds": seconds, "num_train": len(tr),
            "test_accuracy": evaluate(test_loader)[1], "epochs_run": epochs,
            "threads": torch.get_num_threads()}


WORKERS = {"keras": run_keras, "kflow": run_kflow, "torch": run_torch}


# ---------------------------------------------------------------------------
# Driver.


def _torch_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _run_worker(variant: str, recipe: str, epochs: int, seed: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, __file__, "--worker", variant, "--recipes", recipe,
           "--epochs", str(epochs), "--seed", str(seed)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - start
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} on {recipe} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["process_seconds"] = wall
    return result


def _steady_samples_per_second(result: dict, warmup: int) -> float:
    timed = result["epoch_seconds"][warmup:]
    return result["num_train"] * len(timed) / sum(timed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Steady-state training samples/second of kflow recipes vs. the same "
        "model in plain Keras (and in a PyTorch loop when torch is installed).")
    parser.add_argument("--recipes", default="digits-mlp,digits-cnn",
                        help="Comma-separated recipe names. Default: %(default)s.")
    parser.add_argument("--epochs", type=int, default=10,
                        help="Epochs per training run; the first one is warm-up (tracing) "
                        "and is not timed. Default: %(default)s.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Training runs per variant (median reported). Default: %(default)s.")
    parser.add_argument("--seed", type=int, default=0, help="Seed. Default: %(default)s.")
    parser.add_argument("--no-torch", action="store_true", help="Skip the PyTorch loop.")
    parser.add_argument("--json", metavar="PATH", help="Also write all raw results here.")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")

    if args.worker:  # child process: train one variant, print one JSON line
        print(json.dumps(WORKERS[args.worker](args.recipes, args.epochs, args.seed)))
        return 0

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    variants = ["keras", "kflow"]
    if not args.no_torch:
        if _torch_available():
            variants.append("torch")
        else:
            print("torch is not installed: skipping the PyTorch loop.")
    import keras
    import tensorflow as tf

    versions = f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    if "torch" in variants:
        import torch

        versions += f", PyTorch {torch.__version__}"
    print(f"{versions}; Python {platform.python_version()}; {os.cpu_count()} CPUs; "
          f"batch {BATCH_SIZE}, {args.epochs} epochs (first not timed), "
          f"{args.repeats} repeats, median")

    results: dict[tuple[str, str], list[dict]] = {}
    skipped: set[tuple[str, str]] = set()
    t0 = time.perf_counter()
    for recipe in recipes:
        for rep in range(args.repeats):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for variant in order:
                if (recipe, variant) in skipped:
                    continue
                try:
                    res = _run_worker(variant, recipe, args.epochs, args.seed)
                except RuntimeError as e:
                    if variant != "torch":
                        raise
                    print(f"  skipping PyTorch for {recipe}: {str(e).strip().splitlines()[-1]}")
                    skipped.add((recipe, variant))
                    continue
                results.setdefault((recipe, variant), []).append(res)
                sps = _steady_samples_per_second(res, 1)
                print(f"  {recipe:12s} {variant:6s} repeat {rep + 1}: {sps:8.0f} samples/s, "
                      f"first epoch {res['epoch_seconds'][0]:.2f} s, "
                      f"test acc {res['test_accuracy']:.4f}", flush=True)

    rows = []
    for recipe in recipes:
        base = None
        for variant in variants:
            runs = results.get((recipe, variant)) or []
            if not runs:
                continue
            sps = [_steady_samples_per_second(r, 1) for r in runs]
            row = {
                "recipe": recipe, "variant": variant, "samples_per_second": statistics.median(sps),
                "samples_per_second_min": min(sps), "samples_per_second_max": max(sps),
                "first_epoch_seconds": statistics.median(r["epoch_seconds"][0] for r in runs),
                "test_accuracy": statistics.median(r["test_accuracy"] for r in runs),
                "epochs_run": runs[0]["epochs_run"],
            }
            if variant == "keras":
                base = row["samples_per_second"]
            row["vs_plain_keras"] = row["samples_per_second"] / base if base else float("nan")
            rows.append(row)

    print()
    header = (f"| {'recipe':10s} | {'variant':35s} | {'samples/s (min-max)':22s} | "
              f"{'vs plain Keras':14s} | {'1st epoch':9s} | {'test acc':8s} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for row in rows:
        spread = (f"{row['samples_per_second']:6.0f} ({row['samples_per_second_min']:.0f}-"
                  f"{row['samples_per_second_max']:.0f})")
        print(f"| {row['recipe']:10s} | {LABELS[row['variant']]:35s} | {spread:22s} | "
              f"{row['vs_plain_keras']:13.2f}x | {row['first_epoch_seconds']:7.2f} s | "
              f"{row['test_accuracy']:8.4f} |")
    print()
    for recipe in recipes:
        by = {r["variant"]: r for r in rows if r["recipe"] == recipe}
        line = (f"{recipe}: kflow / plain Keras = {by['kflow']['vs_plain_keras']:.2f}x "
                "(target >= 1.8x)")
        if "torch" in by:
            line += (f"; kflow / PyTorch = "
                     f"{by['kflow']['samples_per_second'] / by['torch']['samples_per_second']:.2f}x"
                     " (target >= 1.2x)")
        print(line)
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rows": rows, "raw": {f"{k[0]}/{k[1]}": v for k, v in results.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
