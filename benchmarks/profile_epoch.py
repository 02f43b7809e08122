"""Where an epoch of `kflow.train` goes: a per-epoch time breakdown.

Trains a recipe with `kflow.train` (its defaults: run directory, every
callback) and times, per epoch:

* train steps: from the epoch's first `on_train_batch_begin` to validation,
  less what callbacks took in between (the compiled train function, the
  input pipeline, the gradient-logging step, Keras' own loop);
* validation: from `on_test_begin` to `on_test_end`;
* each callback: the time spent in its hooks (`on_epoch_begin/end`,
  `on_train_batch_begin/end`, `on_test_*`), by its slot in `CALLBACK_ORDER`;
* file writes: waiting at the epoch end for the background writes
  (backup, checkpoint) that the callbacks started; in real use they overlap
  the next epoch, here they are waited for so that they are counted;
* other: the rest of the epoch (Keras' `fit` loop between the pieces).

The first epoch (tracing) is shown apart; the table is the median of the
other epochs. Run it next to `--set grad_log_every=0` to see the cost of the
gradient-logging step.

Usage:

    python benchmarks/profile_epoch.py digits-mlp --epochs 8
    python benchmarks/profile_epoch.py digits-cnn-x10 --epochs 4 --set grad_log_every=0
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOOKS = ("on_epoch_begin", "on_epoch_end", "on_train_batch_begin", "on_train_batch_end",
         "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")


def profile(recipe: str, epochs: int, set_args: list[str], seed: int = 0,
            reference: bool = False) -> list[dict[str, float]]:
    """Trains `recipe` for `epochs` and returns `{piece: [seconds per epoch]}`."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import keras

    from kflow.training import trainer as trainer_mod
    from kflow.training.callbacks import wait_for_writes

    try:
        from bench_training_speed import resolve_recipe_arg
    except ImportError:  # pragma: no cover
        def resolve_recipe_arg(name):
            return name

    per_epoch: list[dict[str, float]] = []
    current: dict[str, float] = collections.defaultdict(float)
    marks: dict[str, float] = {}

    def timed(slot: str, method):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                current[f"callback {slot}"] += time.perf_counter() - start
        return wrapper

    class Clock(keras.callbacks.Callback):
        """First and last in the list: marks the pieces of the epoch."""

        def __init__(self, first: bool):
            super().__init__()
            self.first = first

        def on_epoch_begin(self, epoch, logs=None):
            if self.first:
                current.clear()
                marks.clear()
                marks["epoch"] = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            if self.first and "train" not in marks:
                marks["train"] = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self.first:
                marks["train_end"] = marks["test"] = time.perf_counter()

        def on_test_end(self, logs=None):
            if not self.first:
                current["validation"] += time.perf_counter() - marks["test"]

        def on_epoch_end(self, epoch, logs=None):
            if self.first:
                marks.setdefault("train_end", time.perf_counter())
                return
            start = time.perf_counter()
            wait_for_writes()
            end = time.perf_counter()
            current["file writes (waited)"] += end - start
            callbacks = sum(v for k, v in current.items() if k.startswith("callback"))
            in_train = current.pop("_in_train", 0.0)
            current["train steps"] = marks["train_end"] - marks.get("train", marks["epoch"]) \
                - in_train
            row = dict(current)
            row["total"] = end - marks["epoch"]
            row["other"] = row["total"] - sum(v for k, v in row.items() if k != "total")
            del callbacks
            per_epoch.append(row)

    original = trainer_mod.Trainer.callbacks

    def callbacks(self, *args, **kwargs):
        ordered, stopper = original(self, *args, **kwargs)
        slots = {id(cb): name for name, cb in getattr(self, "callback_slots", {}).items()}
        for cb in ordered:
            slot = slots.get(id(cb), type(cb).__name__)
            for hook in HOOKS:
                method = getattr(cb, hook, None)
                if method is None:
                    continue
                wrapped = timed(slot, method)
                if hook.startswith("on_train_batch"):
                    wrapped = _counting_in_train(wrapped, current)
                setattr(cb, hook, wrapped)
        return [Clock(first=True), *ordered, Clock(first=False)], stopper

    if reference:  # hand-tuned Keras, as bench_training_speed.py's `tuned` variant
        import math

        import tensorflow as tf

        keras.utils.set_random_seed(seed)
        trainer = trainer_mod.Trainer(resolve_recipe_arg(recipe), seed=seed, verbose=0)
        recipe_obj, splits = trainer.recipe, trainer.splits()
        tr, va = splits.train, splits.val
        steps = math.ceil(len(tr) / 32)
        model = recipe_obj.build_model(tr)
        model.compile(optimizer=trainer.build_optimizer(steps), loss=recipe_obj.loss(tr.task),
                      metrics=recipe_obj.metrics(tr.task),
                      steps_per_execution=min(steps, 32))
        train_ds = (tf.data.Dataset.from_tensor_slices((tr.x, tr.y)).cache()
                    .shuffle(len(tr), seed=seed).batch(32).prefetch(tf.data.AUTOTUNE))
        val_ds = tf.data.Dataset.from_tensor_slices((va.x, va.y)).batch(256).cache()
        stop = keras.callbacks.EarlyStopping(patience=epochs, restore_best_weights=True)
        for hook in HOOKS:
            if hasattr(stop, hook):
                setattr(stop, hook, timed("early_stopping", getattr(stop, hook)))
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
                  callbacks=[Clock(first=True), stop, Clock(first=False)])
        return per_epoch

    trainer_mod.Trainer.callbacks = callbacks
    from kflow.training.engine import train

    try:
        with tempfile.TemporaryDirectory(prefix="kflow-profile-") as tmp:
            train(resolve_recipe_arg(recipe), epochs=epochs, seed=seed,
                  run_dir=Path(tmp) / "run", verbose=0,
                  set_args=["early_stopping=false", *set_args])
    finally:
        trainer_mod.Trainer.callbacks = original
    return per_epoch


def _counting_in_train(wrapped, current):
    def inner(*args, **kwargs):
        start = time.perf_counter()
        try:
            return wrapped(*args, **kwargs)
        finally:
            current["_in_train"] += time.perf_counter() - start
    return inner


def table(per_epoch: list[dict[str, float]]) -> str:
    rows = per_epoch[1:] or per_epoch
    keys = ["train steps", "validation"] + sorted(
        {k for r in rows for k in r if k.startswith("callback")}) + [
        "file writes (waited)", "other", "total"]
    total = statistics.median(r["total"] for r in rows)
    lines = ["| piece | ms/epoch (median) | share |", "|---|---|---|"]
    for k in keys:
        ms = 1000 * statistics.median(r.get(k, 0.0) for r in rows)
        lines.append(f"| {k} | {ms:.1f} | {100 * ms / 1000 / total:.1f} % |")
    lines.append(f"| (first epoch, tracing) | {1000 * per_epoch[0]['total']:.0f} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("recipe")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], dest="set_args")
    parser.add_argument("--reference", action="store_true",
                        help="Profile hand-tuned Keras (tf.data, steps_per_execution, early "
                        "stopping, no files) instead of kflow.train.")
    args = parser.parse_args(argv)
    per_epoch = profile(args.recipe, args.epochs, args.set_args, reference=args.reference)
    what = "hand-tuned Keras" if args.reference else "kflow.train"
    print(f"{args.recipe} {what} {' '.join(args.set_args)}: {len(per_epoch)} epochs")
    print(table(per_epoch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
