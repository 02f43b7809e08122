"""Training speed of a kflow recipe vs. the same model in plain Keras and in PyTorch.

For each recipe the SAME model (`recipe.build_model(train_split)`, same data
splits, same optimizer, loss and metrics) is trained three ways, side by side
in one run:

* plain Keras: `model.compile(..., steps_per_execution=1)` with Keras defaults,
  then `model.fit(x_numpy, y_numpy, batch_size=32, validation_data=(xv, yv))`;
* kflow: `kflow.train(...)` itself, with its defaults: tf.data pipeline,
  compile settings, op determinism, training insight, and all its per-epoch
  callbacks (resumable backup, early stopping, best checkpoint, CSV history,
  TensorBoard) writing a real run directory;
* PyTorch (if `import torch` works): the same architecture as a hand-written
  training loop over a `DataLoader(TensorDataset(...), shuffle=True)`, Adam
  lr 1e-3, batch 32, validated every epoch.

How it is timed. Each variant trains in its own fresh Python process
(TensorFlow's op determinism, which kflow turns on, is process-wide; plain
Keras must not get it), one variant after the other, in a rotating order
from one repeat to the next. An epoch is timed from its start to the start
of the next one: training, validation, callbacks (checkpoints, logs) and the
framework's own per-epoch work. The first epoch (tracing, compilation) is
reported apart. Throughput is training samples per second of the median
epoch of a run (other jobs on a shared machine stall a process for seconds
now and then; the median ignores those stalls, the "all epochs" column does
not); the table gives the best of the repeats (other jobs only ever slow a
run down, as `timeit` reasons) and, apart, their median. CPU ms/epoch (all
threads of the process, median) is the least sensitive to other jobs. Test
accuracy after the same number of epochs shows that the speed is not bought
with accuracy (kflow restores the weights of its best validation epoch at
the end, as it always does).

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
LABELS = {"keras": "plain Keras (fit on NumPy, spe=1)", "kflow": "kflow.train (defaults)",
          "torch": "PyTorch loop (DataLoader)"}
BATCH_SIZE = 32


# ---------------------------------------------------------------------------
# Worker side: one variant in one process, driven one epoch at a time.


class _Protocol:
    """JSON lines to the driver: one per epoch, then one for the result.

    They go to a private copy of the original stdout; file descriptor 1 is
    pointed at stderr so that stray prints cannot garble them.
    """

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def send(self, **message) -> None:
        self.out.write(json.dumps(message) + "\n")


def _recipe_and_splits(name: str, seed: int):
    from kflow.recipe.overrides import resolve_recipe
    from kflow.train.engine import prepare

    recipe, _ = resolve_recipe(name, {}, ())
    recipe._seed = seed
    _, splits = prepare(recipe, seed)
    return recipe, splits


def _keras_timer(proto: _Protocol):
    """A callback that reports the wall and CPU time of each epoch.

    Add it last: its `on_epoch_end` runs after every other callback's, and its
    `on_epoch_begin` after theirs, so an epoch's time runs from the start of
    one epoch to the start of the next (the last epoch: to its own end).
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.release = self.end = None

        def on_epoch_begin(self, epoch, logs=None):
            if self.release is not None:
                proto.send(event="epoch", seconds=time.perf_counter() - self.release,
                           cpu_seconds=time.process_time() - self.cpu)
            self.release, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

        def on_train_end(self, logs=None):
            proto.send(event="epoch", seconds=self.end - self.release,
                       cpu_seconds=self.cpu_end - self.cpu)

    return EpochTimer()


def run_keras(proto: _Protocol, name: str, epochs: int, seed: int) -> dict:
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
    model.fit(tr.x, tr.y, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(va.x, va.y),
              callbacks=[_keras_timer(proto)], verbose=0)
    test = model.evaluate(te.x, te.y, verbose=0, return_dict=True)
    return {"num_train": len(tr), "test_accuracy": float(test["accuracy"])}


def run_kflow(proto: _Protocol, name: str, epochs: int, seed: int,
              set_args: tuple[str, ...] = ()) -> dict:
    """kflow: `kflow.train` exactly as a user calls it (run directory, callbacks)."""
    from kflow.recipe.overrides import resolve_recipe
    from kflow.train.engine import train

    recipe, _ = resolve_recipe(name, {}, ())
    # Early stopping stays on (its per-epoch cost is kflow's); a patience of at
    # least `epochs` only makes every variant train the same number of epochs.
    patience = max(int(recipe.hparams["patience"]), epochs)
    with tempfile.TemporaryDirectory(prefix="kflow-bench-") as tmp:
        run = train(name, epochs=epochs, seed=seed, run_dir=Path(tmp) / "run", verbose=0,
                    set_args=[f"patience={patience}", *set_args],
                    callbacks=[_keras_timer(proto)])
        num_train = json.loads((run.run_dir / "run.json").read_text())["num_train"]
    return {"num_train": num_train, "test_accuracy": float(run.metrics["test"]["accuracy"])}


def _torch_model(recipe, train):
    """The recipe's architecture in PyTorch (digits-mlp and digits-cnn)."""
    import numpy as np
    import torch
    from torch import nn

    h = recipe.hparams
    if h.get("activation", "relu") != "relu" or h.get("scaling") != "standard":
        raise NotImplementedError("the PyTorch mirror supports relu + standard scaling only")
    bn = h.get("batch_norm", "before")
    if bn == "after":
        raise NotImplementedError("the PyTorch mirror supports batch_norm=before/none")
    x = np.asarray(train.x, dtype="float32")
    axes = tuple(range(x.ndim - 1))
    mean, std = x.mean(axis=axes), np.sqrt(x.var(axis=axes)).clip(min=1e-7)
    dropout = h.get("dropout", 0.0)

    def he_normal(layer):  # Keras' he_normal: truncated normal, stddev sqrt(2 / fan_in)
        fan_in = layer.weight[0].numel()
        scale = math.sqrt(2.0 / fan_in) / 0.87962566103423978
        nn.init.trunc_normal_(layer.weight, std=scale, a=-2 * scale, b=2 * scale)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
        return layer

    def block(linear, norm):  # linear -> [BatchNorm] -> ReLU, like kflow's blocks
        return [he_normal(linear), *([norm] if bn == "before" else []), nn.ReLU()]

    class Standardize(nn.Module):  # Keras' Normalization layer, adapted on train
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("std", torch.from_numpy(std))

        def forward(self, t):
            return (t - self.mean) / self.std

    class Permute(nn.Module):
        def __init__(self, *dims):
            super().__init__()
            self.dims = dims

        def forward(self, t):
            return t.permute(*self.dims)

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
        layers.append(Permute(0, 3, 1, 2))  # NHWC (Keras) -> NCHW
        channels, size = x.shape[-1], x.shape[1]
        for stage in range(h["stages"]):
            filters = h["filters"] * 2**stage
            for _ in range(2):
                layers += block(
                    nn.Conv2d(channels, filters, 3, padding="same", bias=bn != "before"),
                    nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01))
                channels = filters
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [Permute(0, 2, 3, 1), nn.Flatten()]  # flatten in Keras' NHWC order
        layers += block(nn.Linear(channels * size * size, h["dense_units"], bias=bn != "before"),
                        nn.BatchNorm1d(h["dense_units"], eps=1e-3, momentum=0.01))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h["dense_units"]
    else:
        raise NotImplementedError(f"no PyTorch mirror of {recipe.name}")
    head = nn.Linear(width, train.num_classes)  # logits; the softmax is in the loss
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, head)


def run_torch(proto: _Protocol, name: str, epochs: int, seed: int) -> dict:
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

    def loader(split, **kwargs):
        return DataLoader(TensorDataset(torch.as_tensor(split.x, dtype=torch.float32),
                                        torch.as_tensor(split.y, dtype=torch.long)), **kwargs)

    train_loader = loader(tr, batch_size=BATCH_SIZE, shuffle=True)
    val_loader, test_loader = loader(va, batch_size=256), loader(te, batch_size=256)

    def evaluate(data):
        model.eval()
        correct = total = 0
        loss = 0.0
        with torch.no_grad():
            for xb, yb in data:
                out = model(xb)
                loss += F.cross_entropy(out, yb, reduction="sum").item()
                correct += (out.argmax(1) == yb).sum().item()
                total += len(yb)
        return loss / total, correct / total

    for _ in range(epochs):
        start, cpu = time.perf_counter(), time.process_time()
        model.train()
        for xb, yb in train_loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        evaluate(val_loader)
        proto.send(event="epoch", seconds=time.perf_counter() - start,
                   cpu_seconds=time.process_time() - cpu)
    return {"num_train": len(tr), "test_accuracy": evaluate(test_loader)[1]}


WORKERS = {"keras": run_keras, "kflow": run_kflow, "torch": run_torch}


def worker_main(variant: str, recipe: str, epochs: int, seed: int) -> int:
    proto = _Protocol()
    try:
        base, _, sets = variant.partition(":")  # "kflow:KEY=VALUE,KEY=VALUE"
        extra = {"set_args": tuple(sets.split(","))} if sets else {}
        result = WORKERS[base](proto, recipe, epochs, seed, **extra)
    except NotImplementedError as e:
        proto.send(event="skip", reason=str(e))
        return 0
    proto.send(event="done", **result)
    return 0


# ---------------------------------------------------------------------------
# Driver side.


class _Worker:
    def __init__(self, variant: str, recipe: str, epochs: int, seed: int):
        self.variant = variant
        self.log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", variant, "--recipes", recipe,
             "--epochs", str(epochs), "--seed", str(seed)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=REPO, bufsize=1)
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []
        self.result: dict | None = None
        self.skipped: str | None = None
        self.finished = False

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            raise RuntimeError(f"the {self.variant} worker died:\n{self.log.read()[-3000:]}")
        return json.loads(line)

    def _handle(self, message: dict) -> None:
        if message["event"] == "epoch":
            self.epoch_seconds.append(message["seconds"])
            self.epoch_cpu_seconds.append(message["cpu_seconds"])
            return
        if message["event"] == "skip":
            self.skipped = message["reason"]
        else:  # "done" (also after an early stop)
            self.result = message
        self.finished = True

    def finish(self) -> None:
        """Collects the epoch reports and the result; waits for the exit."""
        while not self.finished:
            self._handle(self._receive())
        self.proc.wait()
        self.log.close()


def run_repeat(recipe: str, variants: list[str], epochs: int, seed: int, rep: int):
    """Trains each variant in turn (rotating order), in a fresh process, back to back."""
    shift = rep % len(variants)
    workers = []
    for variant in variants[shift:] + variants[:shift]:
        worker = _Worker(variant, recipe, epochs, seed)
        try:
            worker.finish()
        finally:
            if worker.proc.poll() is None:
                worker.proc.kill()
        workers.append(worker)
    return sorted(workers, key=lambda w: variants.index(w.variant))


def _throughput(worker: _Worker) -> dict:
    """Steady-state figures of one run (the first epoch traces and compiles)."""
    seconds, cpu = worker.epoch_seconds[1:], worker.epoch_cpu_seconds[1:]
    n = worker.result["num_train"]
    return {
        # The typical epoch: immune to the multi-second stalls other jobs cause.
        "median": n / statistics.median(seconds),
        # Every epoch (stalls included).
        "mean": n * len(seconds) / sum(seconds),
        "cpu_ms": 1000 * statistics.median(cpu),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Steady-state training samples/second of kflow recipes vs. the same "
        "model in plain Keras (and in a PyTorch loop when torch is installed).")
    parser.add_argument("--recipes", default="digits-mlp,digits-cnn",
                        help="Comma-separated recipe names. Default: %(default)s.")
    parser.add_argument("--epochs", type=int, default=10,
                        help="Epochs per training run; the first one (tracing) is reported "
                        "apart, not in samples/s. Default: %(default)s.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Runs of each variant (median reported). Default: %(default)s.")
    parser.add_argument("--seed", type=int, default=0, help="Seed. Default: %(default)s.")
    parser.add_argument("--no-torch", action="store_true", help="Skip the PyTorch loop.")
    parser.add_argument("--json", metavar="PATH", help="Also write all raw results here.")
    parser.add_argument("--kflow-set", action="append", default=[], metavar="KEY=VALUE[,...]",
                        help="Also time kflow.train with these --set overrides (repeatable), "
                        "e.g. grad_log_every=0 to see what a default feature costs.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    if args.worker:
        return worker_main(args.worker, args.recipes, args.epochs, args.seed)

    import importlib.util

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    variants = ["keras", "kflow", *(f"kflow:{sets}" for sets in args.kflow_set)]
    if not args.no_torch:
        if importlib.util.find_spec("torch") is not None:
            variants.append("torch")
        else:
            print("torch is not installed: skipping the PyTorch loop.")
    from importlib.metadata import version

    versions = f"TensorFlow {version('tensorflow')}, Keras {version('keras')}"
    if "torch" in variants:
        versions += f", PyTorch {version('torch')}"
    print(f"{versions}; Python {platform.python_version()}; {os.cpu_count()} CPUs; "
          f"batch {BATCH_SIZE}; {args.epochs} epochs (the first not timed); "
          f"{args.repeats} repeats, median")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)

    t0 = time.perf_counter()
    runs: dict[tuple[str, str], list[_Worker]] = {}
    skipped: dict[tuple[str, str], str] = {}
    for recipe in recipes:
        for rep in range(args.repeats):
            todo = [v for v in variants if (recipe, v) not in skipped]
            for worker in run_repeat(recipe, todo, args.epochs, args.seed, rep):
                key = (recipe, worker.variant)
                if worker.skipped is not None:
                    skipped[key] = worker.skipped
                    print(f"  {recipe:12s} {worker.variant:6s} skipped: {worker.skipped}")
                    continue
                runs.setdefault(key, []).append(worker)
                t = _throughput(worker)
                print(f"  {recipe:12s} {worker.variant:6s} repeat {rep + 1}: "
                      f"{t['median']:8.0f} samples/s (median epoch), {t['mean']:8.0f} "
                      f"(all epochs), first epoch {worker.epoch_seconds[0]:.2f} s, test acc "
                      f"{worker.result['test_accuracy']:.4f}", flush=True)

    rows = []
    for recipe in recipes:
        base = base_median = None
        for variant in variants:
            workers = runs.get((recipe, variant))
            if not workers:
                continue
            figures = [_throughput(w) for w in workers]
            row = {
                "recipe": recipe, "variant": variant,
                "samples_per_second": max(f["median"] for f in figures),
                "samples_per_second_median": statistics.median(f["median"] for f in figures),
                "samples_per_second_repeats": [f["median"] for f in figures],
                "samples_per_second_all_epochs": max(f["mean"] for f in figures),
                "cpu_ms_per_epoch": statistics.median(f["cpu_ms"] for f in figures),
                "first_epoch_seconds": statistics.median(w.epoch_seconds[0] for w in workers),
                "test_accuracy": statistics.median(w.result["test_accuracy"] for w in workers),
                "epoch_seconds": [w.epoch_seconds for w in workers],
                "epoch_cpu_seconds": [w.epoch_cpu_seconds for w in workers],
            }
            if variant == "keras":
                base = row["samples_per_second"]
                base_median = row["samples_per_second_median"]
            row["vs_plain_keras"] = row["samples_per_second"] / base if base else math.nan
            row["vs_plain_keras_median"] = (row["samples_per_second_median"] / base_median
                                            if base_median else math.nan)
            rows.append(row)

    print()
    print("| recipe | variant | samples/s: best (each repeat) | vs plain Keras | "
          "median of repeats: samples/s (vs plain) | samples/s, all epochs | CPU ms/epoch | "
          "1st epoch | test acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        spread = ", ".join(f"{s:.0f}" for s in row["samples_per_second_repeats"])
        label = LABELS.get(row["variant"]) or f"kflow.train --set {row['variant'][6:]}"
        print(f"| {row['recipe']} | {label} | "
              f"**{row['samples_per_second']:.0f}** ({spread}) | "
              f"**{row['vs_plain_keras']:.2f}x** | {row['samples_per_second_median']:.0f} "
              f"({row['vs_plain_keras_median']:.2f}x) | "
              f"{row['samples_per_second_all_epochs']:.0f} | {row['cpu_ms_per_epoch']:.0f} | "
              f"{row['first_epoch_seconds']:.1f} s | {row['test_accuracy']:.4f} |")
    print()
    for recipe in recipes:
        by = {r["variant"]: r for r in rows if r["recipe"] == recipe}
        if "kflow" not in by or "keras" not in by:
            continue
        line = (f"{recipe}: kflow / plain Keras = {by['kflow']['vs_plain_keras']:.2f}x "
                "(target >= 1.8x)")
        if "torch" in by:
            line += (f"; kflow / PyTorch = "
                     f"{by['kflow']['samples_per_second'] / by['torch']['samples_per_second']:.2f}x"
                     " (target >= 1.2x)")
        print(line)
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s; load average after: "
          "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
