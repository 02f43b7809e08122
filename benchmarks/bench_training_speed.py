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

How it is timed. Each variant trains in its own Python process (TensorFlow's
op determinism, which kflow turns on, is process-wide; plain Keras must not
get it). The processes run in lockstep: before each epoch a worker waits for
the driver, which lets one worker at a time train one epoch, in a rotating
order, after a short pause (thread pools of the previous epoch go idle).
So the variants' n-th epochs run seconds apart, and a slowdown of the
shared machine (other jobs stall a process now and then: an 0.2 s epoch
becomes 2 s, CPU time included) hits neighbouring epochs of every variant
alike. Each epoch of a variant is compared with the plain-Keras epoch of the
same round: the headline ratio is the median of these paired ratios (with
their interquartile range), the samples/s the median epoch. An epoch is
timed from its start to the start of the next one: training, validation,
callbacks (checkpoints, logs) and the framework's own per-epoch work,
including kflow's background file writes, which the clock waits for
(charged in full, although in real use they overlap the next epoch). The
first epoch (tracing, compilation) is reported apart. Test accuracy after
the same number of epochs shows that the speed is not bought with accuracy
(kflow restores the weights of its best validation epoch at the end, as it
always does).

Usage:

    python benchmarks/bench_training_speed.py
    python benchmarks/bench_training_speed.py --epochs 10 --repeats 3 \\
        --recipes digits-mlp,digits-cnn --no-torch
    python benchmarks/bench_training_speed.py --tuned-keras --kflow-set grad_log_every=0

With `--tuned-keras` every workload also runs hand-tuned Keras: what kflow
does for the user, written by hand (tf.data, `steps_per_execution`,
validation every epoch, early stopping restoring the best weights), except
writing files, op determinism and training insight: the ceiling of kflow's
defaults. With `--kflow-set grad_log_every=0` the cost of gradient logging
is printed as the paired ratio of the two kflow variants. After the table,
`kflow train RECIPE`'s start-up (command to the first training step) is
timed for the shipped recipes (`--startup-repeats 0` skips it). For a
per-epoch breakdown of kflow's time see `benchmarks/profile_epoch.py`.
"""

from __future__ import annotations

import argparse
import functools
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
          "torch": "PyTorch loop (DataLoader)",
          "tuned": "hand-tuned Keras (tf.data, spe=32, val, early stop; the ceiling)"}
BATCH_SIZE = 32
#: Pause before each timed epoch, so that nothing of the previous one still runs.
SETTLE_SECONDS = 0.25


# ---------------------------------------------------------------------------
# Workloads. Besides the shipped recipes (digits: 1,257 training samples, epochs
# of 0.1-0.6 s where fixed per-epoch costs dominate), larger ones whose epochs
# take seconds: the digits repeated 10x with pixel noise on the copies (17,970
# samples, ~12.6k of them for training), and a 100,000-row numeric table.

#: Copies of the digits in the `-x10` workloads (the first one is the original).
DIGITS_COPIES = 10
#: Rows, features and classes of the `table-mlp-100k` workload.
TABLE_ROWS, TABLE_FEATURES, TABLE_CLASSES = 100_000, 32, 10


def _noisy_copies(data, copies: int, seed: int = 0):
    """`data` repeated `copies` times; each copy but the first gets its own pixel noise."""
    import dataclasses

    import numpy as np

    rng = np.random.default_rng(seed)
    xs = [data.x] + [np.clip(data.x + rng.normal(0.0, 1.0, data.x.shape), 0.0, 16.0)
                     .astype("float32") for _ in range(copies - 1)]
    return dataclasses.replace(data, x=np.concatenate(xs), y=np.tile(data.y, copies),
                               name=f"{data.name}-x{copies}")


@functools.cache
def _workloads() -> dict:
    """`{name: Recipe subclass}` for the larger workloads (built lazily: imports kflow)."""
    from kflow.catalog.digits_cnn import DigitsCNN
    from kflow.catalog.digits_mlp import DigitsMLP
    from kflow.recipe.base import Recipe

    class DigitsCNNx10(DigitsCNN):
        name = "digits-cnn-x10"
        description = "digits-cnn on the digits repeated 10x with pixel noise."

        def load_data(self):
            return _noisy_copies(super().load_data(), DIGITS_COPIES)

    class DigitsMLPx10(DigitsMLP):
        name = "digits-mlp-x10"
        description = "digits-mlp on the digits repeated 10x with pixel noise."

        def load_data(self):
            return _noisy_copies(super().load_data(), DIGITS_COPIES)

    class TableMLP(DigitsMLP):
        name = "table-mlp-100k"
        description = "digits-mlp's MLP on a 100,000-row numeric table (10 classes)."

        def load_data(self):
            from sklearn.datasets import make_classification

            from kflow.data.dataset import Dataset

            x, y = make_classification(
                n_samples=TABLE_ROWS, n_features=TABLE_FEATURES, n_informative=16,
                n_redundant=8, n_classes=TABLE_CLASSES, n_clusters_per_class=2,
                class_sep=1.5, random_state=0)
            return Dataset(x.astype("float32"), y.astype("int64"), task="multiclass",
                           class_names=[str(c) for c in range(TABLE_CLASSES)],
                           name="table-100k")

    del Recipe
    return {cls.name: cls for cls in (DigitsCNNx10, DigitsMLPx10, TableMLP)}


def resolve_recipe_arg(name: str):
    """A workload name as `kflow.train` takes it: a registered name or a Recipe class."""
    return _workloads().get(name, name)


#: The shipped recipes behind each workload (the PyTorch mirror builds their models).
BASE_RECIPE = {"digits-cnn-x10": "digits-cnn", "digits-mlp-x10": "digits-mlp",
               "table-mlp-100k": "digits-mlp"}


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

    def gate(self) -> None:
        """Waits until the driver lets this worker train its next epoch."""
        self.send(event="ready")
        if not sys.stdin.readline():
            raise SystemExit("the benchmark driver went away")


def _recipe_and_splits(name: str, seed: int):
    from kflow.training.trainer import Trainer

    trainer = Trainer(resolve_recipe_arg(name), seed=seed, verbose=0)
    return trainer, trainer.recipe, trainer.splits()


def _keras_timer(proto: _Protocol):
    """A callback that waits for the driver and reports the wall and CPU time of each epoch.

    Add it last: its `on_epoch_end` runs after every other callback's, and its
    `on_epoch_begin` after theirs, so an epoch's time runs from the start of
    one epoch to the start of the next (the last epoch: to its own end).
    Background writes of kflow's callbacks are waited for and charged to the
    epoch that started them.
    """
    import keras

    def settle():
        try:
            from kflow.training.callbacks import wait_for_writes
        except ImportError:
            return
        wait_for_writes()

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.release = None

        def _report(self):
            settle()
            proto.send(event="epoch", seconds=time.perf_counter() - self.release,
                       cpu_seconds=time.process_time() - self.cpu)

        def on_epoch_begin(self, epoch, logs=None):
            if self.release is not None:
                self._report()
            proto.gate()
            self.release, self.cpu = time.perf_counter(), time.process_time()

        def on_train_end(self, logs=None):
            self._report()
            proto.gate()  # what follows (test evaluation, files) runs when nothing is timed

    return EpochTimer()


def run_keras(proto: _Protocol, name: str, epochs: int, seed: int) -> dict:
    """Plain Keras: the recipe's model, Keras defaults, fit on NumPy arrays."""
    import keras

    keras.utils.set_random_seed(seed)
    trainer, recipe, splits = _recipe_and_splits(name, seed)
    tr, va, te = splits.train, splits.val, splits.test
    model = recipe.build_model(tr)
    model.compile(
        optimizer=trainer.build_optimizer(math.ceil(len(tr) / BATCH_SIZE)),
        loss=recipe.loss(tr.task), metrics=recipe.metrics(tr.task), steps_per_execution=1,
    )
    model.fit(tr.x, tr.y, batch_size=BATCH_SIZE, epochs=epochs, validation_data=(va.x, va.y),
              callbacks=[_keras_timer(proto)], verbose=0)
    test = model.evaluate(te.x, te.y, verbose=0, return_dict=True)
    return {"num_train": len(tr), "test_accuracy": float(test["accuracy"])}


def run_tuned(proto: _Protocol, name: str, epochs: int, seed: int) -> dict:
    """Hand-tuned Keras: what kflow does for the user, written by hand, except writing files.

    tf.data (cached, shuffled, prefetched), `steps_per_execution`, validation
    every epoch in batches of 256, early stopping that restores the best
    weights; no op determinism, no training insight, no run directory: the
    ceiling of what kflow's defaults can reach for this model.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    trainer, recipe, splits = _recipe_and_splits(name, seed)
    tr, va, te = splits.train, splits.val, splits.test
    steps = math.ceil(len(tr) / BATCH_SIZE)
    model = recipe.build_model(tr)
    model.compile(optimizer=trainer.build_optimizer(steps), loss=recipe.loss(tr.task),
                  metrics=recipe.metrics(tr.task),
                  steps_per_execution=min(steps, 32))
    train_ds = (tf.data.Dataset.from_tensor_slices((tr.x, tr.y)).cache()
                .shuffle(len(tr), seed=seed).batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE))
    val_ds = tf.data.Dataset.from_tensor_slices((va.x, va.y)).batch(256).cache()
    # Early stopping as kflow's (a patience of at least `epochs`: every variant trains as
    # many epochs), restoring the best weights at the end.
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=max(int(recipe.hparams["patience"]), epochs),
        restore_best_weights=True)
    model.fit(train_ds, validation_data=val_ds, epochs=epochs,
              callbacks=[stop, _keras_timer(proto)], verbose=0)
    test = model.evaluate(te.x, te.y, batch_size=256, verbose=0, return_dict=True)
    return {"num_train": len(tr), "test_accuracy": float(test["accuracy"])}


def run_kflow(proto: _Protocol, name: str, epochs: int, seed: int,
              set_args: tuple[str, ...] = ()) -> dict:
    """kflow: `kflow.train` exactly as a user calls it (run directory, callbacks)."""
    from kflow.recipe.overrides import resolve_recipe
    from kflow.training.engine import train

    recipe, _ = resolve_recipe(resolve_recipe_arg(name), {}, ())
    # Early stopping stays on (its per-epoch cost is kflow's); a patience of at
    # least `epochs` only makes every variant train the same number of epochs.
    patience = max(int(recipe.hparams["patience"]), epochs)
    with tempfile.TemporaryDirectory(prefix="kflow-bench-") as tmp:
        run = train(resolve_recipe_arg(name), epochs=epochs, seed=seed,
                    run_dir=Path(tmp) / "run", verbose=0,
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
    base = BASE_RECIPE.get(recipe.name, recipe.name)
    if base == "digits-mlp":
        if h["skip_connections"]:
            raise NotImplementedError("the PyTorch mirror has no skip connections")
        width = x.shape[1]
        for _ in range(h["hidden_layers"]):
            layers += block(nn.Linear(width, h["units"], bias=bn != "before"),
                            nn.BatchNorm1d(h["units"], eps=1e-3, momentum=0.01))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h["units"]
    elif base == "digits-cnn":
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
    _, recipe, splits = _recipe_and_splits(name, seed)
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
        proto.gate()
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
    proto.gate()
    return {"num_train": len(tr), "test_accuracy": evaluate(test_loader)[1]}


# ---------------------------------------------------------------------------
# Start-up: `kflow train` from the command to its first training step.

_STARTUP_CHILD = r"""
import importlib.abc, importlib.machinery, os, sys, time
t_python = time.time()

def patch(trainer_module):
    import keras
    fit = trainer_module.Trainer.fit

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.begin = time.time()

        def on_train_batch_end(self, batch, logs=None):  # the first call traced the step
            mods = sorted(m for m in sys.modules if "." not in m)
            os.write(int(os.environ["KFLOW_STARTUP_FD"]), (repr({
                "first_step": time.time(), "first_step_begin": self.begin,
                "python": t_python, "modules": mods}) + "\n").encode())
            os._exit(0)

    def patched(self, *args, user_callbacks=(), **kwargs):
        return fit(self, *args, user_callbacks=[*user_callbacks, FirstStep()], **kwargs)

    trainer_module.Trainer.fit = patched

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "kflow.training.trainer":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module
        def run(module):
            exec_module(module)
            patch(module)
        spec.loader.exec_module = run
        return spec

sys.meta_path.insert(0, Hook())
sys.argv = ["kflow", *sys.argv[1:]]
from kflow.cli.main import main
sys.exit(main())
"""


def measure_startup(recipe: str, repeats: int = 3) -> dict:
    """Seconds from launching `python -m kflow train RECIPE` to its first training step.

    The command runs as a user types it (a new Python process, default
    options, a fresh run directory); a hook in the child notes the time when
    the first call of the train function begins and when it returns (it
    traces the step, then runs `steps_per_execution` steps) and ends the
    process there. The median of
    `repeats` launches, and the top-level modules loaded by then.
    """
    import ast
    import shutil

    times, python, before_trace, modules = [], [], [], []
    for _ in range(repeats):
        tmp = tempfile.mkdtemp(prefix="kflow-startup-")
        read, write = os.pipe()
        start = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-c", _STARTUP_CHILD, "train", recipe, "--run-dir",
             os.path.join(tmp, "run"), "--quiet"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                           "KFLOW_STARTUP_FD": str(write)})
        os.close(write)
        with os.fdopen(read) as f:
            line = f.readline()
        err = proc.communicate()[1]
        shutil.rmtree(tmp, ignore_errors=True)
        if not line:
            raise RuntimeError(f"kflow train {recipe} did not reach a training step:\n"
                               f"{err.decode()[-2000:]}")
        info = ast.literal_eval(line)
        times.append(info["first_step"] - start)
        python.append(info["python"] - start)
        before_trace.append(info["first_step_begin"] - start)
        modules = info["modules"]
    return {"seconds": statistics.median(times), "all": times,
            "python_seconds": statistics.median(python),
            "before_first_call_seconds": statistics.median(before_trace), "modules": modules}


WORKERS = {"keras": run_keras, "kflow": run_kflow, "torch": run_torch, "tuned": run_tuned}


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
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=REPO, bufsize=1)
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []
        self.result: dict | None = None
        self.skipped: str | None = None
        self.finished = False
        self.at_gate = False

    def _receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            raise RuntimeError(f"the {self.variant} worker died:\n{self.log.read()[-3000:]}")
        return json.loads(line)

    def _handle(self, message: dict) -> str:
        event = message["event"]
        if event == "epoch":
            self.epoch_seconds.append(message["seconds"])
            self.epoch_cpu_seconds.append(message["cpu_seconds"])
        elif event == "skip":
            self.skipped = message["reason"]
            self.finished = True
        elif event == "done":  # also after an early stop
            self.result = message
            self.finished = True
        return event

    def _until(self, wanted: str) -> bool:
        """Handles messages up to `wanted`; `False` when the worker finished first."""
        while not self.finished:
            if self._handle(self._receive()) == wanted:
                return True
        return False

    def wait_ready(self) -> bool:
        """Waits until the worker is at its gate; `False` once it has finished."""
        if not self.at_gate:
            self.at_gate = self._until("ready")
        return self.at_gate

    def release(self) -> None:
        # A pause first: thread pools of the worker that just ran (PyTorch's OpenMP
        # threads spin-wait for a while after each parallel region) go to sleep.
        time.sleep(SETTLE_SECONDS)
        self.at_gate = False
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def run_epoch(self) -> bool:
        """Lets the worker train one epoch and waits for it; `False` once it has finished."""
        if not self.wait_ready():
            return False
        self.release()
        return self._until("epoch")

    def finish(self) -> None:
        """Lets the worker finish (test evaluation, files) and collects its result."""
        if self.wait_ready():
            self.release()
        self._until("done")
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def run_repeat(recipe: str, variants: list[str], epochs: int, seed: int, rep: int):
    """Trains all variants in lockstep: one epoch of one variant at a time, rotating.

    Nothing else runs meanwhile: the workers set up before the first round
    and finish (test evaluation, run files) after the last one, one at a time.
    """
    workers = [_Worker(variant, recipe, epochs, seed) for variant in variants]
    try:
        for worker in workers:
            worker.wait_ready()
        for round_ in range(epochs):
            shift = (rep + round_) % len(workers)
            for worker in workers[shift:] + workers[:shift]:
                worker.run_epoch()
        for worker in workers:
            worker.finish()
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.kill()
    return workers


def _quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly."""
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _throughput(worker: _Worker) -> dict:
    """Steady-state figures of one run (the first epoch traces and compiles)."""
    seconds = worker.epoch_seconds[1:]
    n = worker.result["num_train"]
    return {"median": n / statistics.median(seconds), "mean": n * len(seconds) / sum(seconds)}


def _paired_ratios(workers: list[_Worker], base: list[_Worker]) -> list[float]:
    """Speed of `workers` over `base`, epoch by epoch of the same lockstep round."""
    ratios = []
    for w, b in zip(workers, base, strict=True):
        for mine, theirs in zip(w.epoch_seconds[1:], b.epoch_seconds[1:], strict=False):
            ratios.append(theirs / mine)
    return sorted(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Steady-state training samples/second of kflow recipes vs. the same "
        "model in plain Keras (and in a PyTorch loop when torch is installed).")
    parser.add_argument("--recipes",
                        default="digits-mlp,digits-cnn,digits-mlp-x10,digits-cnn-x10,table-mlp-100k",
                        help="Comma-separated recipe names: shipped recipes, or the larger "
                        "workloads digits-mlp-x10, digits-cnn-x10 (the digits repeated 10x "
                        "with pixel noise) and table-mlp-100k (a 100,000-row numeric table). "
                        "Default: %(default)s.")
    parser.add_argument("--epochs", type=int, default=12,
                        help="Epochs per training run; the first one (tracing) is reported "
                        "apart, not in samples/s. Default: %(default)s.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Lockstep runs of all variants (epochs pooled). Default: %(default)s.")
    parser.add_argument("--seed", type=int, default=0, help="Seed. Default: %(default)s.")
    parser.add_argument("--no-torch", action="store_true", help="Skip the PyTorch loop.")
    parser.add_argument("--tuned-keras", action="store_true",
                        help="Also time hand-tuned Keras (tf.data, steps_per_execution, no "
                        "callbacks): the ceiling of what engine defaults can reach.")
    parser.add_argument("--json", metavar="PATH", help="Also write all raw results here.")
    parser.add_argument("--kflow-set", action="append", default=[], metavar="KEY=VALUE[,...]",
                        help="Also time kflow.train with these --set overrides (repeatable), "
                        "e.g. grad_log_every=0 to see what a default feature costs.")
    parser.add_argument("--startup-repeats", type=int, default=3, metavar="N",
                        help="Launches of `kflow train` per shipped recipe timed to the first "
                        "training step (0: skip). Default: %(default)s.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    if args.worker:
        return worker_main(args.worker, args.recipes, args.epochs, args.seed)

    import importlib.util

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    variants = ["keras", *(["tuned"] if args.tuned_keras else []), "kflow",
                *(f"kflow:{sets}" for sets in args.kflow_set)]
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
          f"{args.repeats} repeats, in lockstep")
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
        by_variant = {v: runs[(recipe, v)] for v in variants if runs.get((recipe, v))}
        for variant, workers in by_variant.items():
            n = workers[0].result["num_train"]
            seconds = sorted(s for w in workers for s in w.epoch_seconds[1:])
            cpu = sorted(c for w in workers for c in w.epoch_cpu_seconds[1:])
            row = {
                "recipe": recipe, "variant": variant,
                "samples_per_second": n / _quantile(seconds, 0.5),
                "samples_per_second_all_epochs": n * len(seconds) / sum(seconds),
                "cpu_ms_per_epoch": 1000 * _quantile(cpu, 0.5),
                "first_epoch_seconds": statistics.median(w.epoch_seconds[0] for w in workers),
                "test_accuracy": statistics.median(w.result["test_accuracy"] for w in workers),
                "epoch_seconds": [w.epoch_seconds for w in workers],
                "epoch_cpu_seconds": [w.epoch_cpu_seconds for w in workers],
            }
            for ref in ("keras", "tuned", "torch"):
                if ref in by_variant:
                    r = _paired_ratios(workers, by_variant[ref])
                    row[f"vs_{ref}"] = _quantile(r, 0.5)
                    row[f"vs_{ref}_iqr"] = [_quantile(r, 0.25), _quantile(r, 0.75)]
            rows.append(row)

    def ratio(row, ref):
        if f"vs_{ref}" not in row:
            return "-"
        low, high = row[f"vs_{ref}_iqr"]
        return f"**{row[f'vs_{ref}']:.2f}x** ({low:.2f}-{high:.2f})"

    print()
    print("| recipe | variant | samples/s (median epoch) | vs plain Keras (IQR) "
          "| vs hand-tuned Keras (IQR) | vs PyTorch (IQR) "
          "| samples/s, all epochs | CPU ms/epoch | 1st epoch | test acc |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        label = LABELS.get(row["variant"]) or f"kflow.train --set {row['variant'][6:]}"
        print(f"| {row['recipe']} | {label} | {row['samples_per_second']:.0f} | "
              f"{ratio(row, 'keras')} | {ratio(row, 'tuned')} | {ratio(row, 'torch')} | "
              f"{row['samples_per_second_all_epochs']:.0f} | {row['cpu_ms_per_epoch']:.0f} | "
              f"{row['first_epoch_seconds']:.1f} s | {row['test_accuracy']:.4f} |")
    print()
    for recipe in recipes:
        by = {r["variant"]: r for r in rows if r["recipe"] == recipe}
        if "kflow" not in by or "keras" not in by:
            continue
        line = f"{recipe}: kflow / plain Keras = {by['kflow']['vs_keras']:.2f}x"
        if "tuned" in by:
            ceiling = by["tuned"]["vs_keras"]
            line += (f" (ceiling: hand-tuned / plain = {ceiling:.2f}x; target >= 1.8x where "
                     f"the ceiling is >= 2x); kflow / hand-tuned = "
                     f"{by['kflow']['vs_tuned']:.2f}x (target >= 0.9x)")
        if "vs_torch" in by["kflow"]:
            line += f"; kflow / PyTorch = {by['kflow']['vs_torch']:.2f}x (target >= 1.2x)"
        print(line)
        off = by.get("kflow:grad_log_every=0")
        if off is not None:  # paired: the same rounds of both
            r = _paired_ratios(runs[(recipe, "kflow:grad_log_every=0")], runs[(recipe, "kflow")])
            print("  gradient logging (default cadence) costs "
                  f"{100 * (_quantile(r, 0.5) - 1):+.1f} %"
                  f" of kflow's epoch time (IQR {100 * (_quantile(r, 0.25) - 1):+.1f} to "
                  f"{100 * (_quantile(r, 0.75) - 1):+.1f} %; target <= 3 %)")
    startup = {}
    if args.startup_repeats > 0:
        print()
        print("`kflow train RECIPE` start-up: command to first training step (imports, data, "
              f"building, tracing), median of {args.startup_repeats}:")
        for recipe in recipes:
            if recipe in BASE_RECIPE:  # not a shipped recipe: `kflow train` cannot name it
                continue
            startup[recipe] = measure_startup(recipe, args.startup_repeats)
            heavy = [m for m in ("sklearn", "scipy", "pandas", "matplotlib", "tensorboard",
                                 "mlflow", "PIL", "yaml") if m in startup[recipe]["modules"]]
            print(f"  {recipe}: {startup[recipe]['seconds']:.2f} s (Python itself "
                  f"{startup[recipe]['python_seconds']:.2f} s, to the first call "
                  f"{startup[recipe]['before_first_call_seconds']:.2f} s, tracing and the "
                  "first steps the rest; all "
                  + ", ".join(f"{t:.2f}" for t in startup[recipe]["all"])
                  + f"); loaded by then: {', '.join(heavy) or 'none of the optional libraries'}")
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s; load average after: "
          "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"argv": sys.argv[1:], "rows": rows,
             "startup": {k: {kk: vv for kk, vv in v.items() if kk != "modules"}
                         for k, v in startup.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
