"""Cost of gradient-norm logging: training throughput with logging every step,
every 10 steps, and off, side by side in one run.

For each setting the recipe's model is built and compiled by kflow's engine
(`Trainer.build_model`: an `InsightModel` when `grad_log_every > 0`, the recipe's
plain functional model when it is 0) with the same seed, data, optimizer and
`steps_per_execution`. Each trains with the callbacks `kflow.train` adds for
it (NanGuard and LearningRateLogger always; with logging also
GradientNormLogger writing grad_norms.csv and TensorBoard scalars, and the
dead-ReLU probe), without validation.

After one warm-up epoch per setting (tracing), the settings take turns in
rotating order, a few epochs at a time (one `fit` call each, whose first
epoch is not timed: it holds the once-per-fit set-up), so that noise from
other work on the machine hits them alike. The figures are the fastest and
the median epoch wall time (callbacks included), as training samples/second,
and the slowdown relative to logging off. On a shared machine the fastest epoch is
the better estimate of the intrinsic cost.

Usage:

    python benchmarks/bench_grad_logging.py
    python benchmarks/bench_grad_logging.py --recipe digits-mlp --rounds 15
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = (("off", 0), ("default (32)", 32), ("every 10 steps", 10), ("every step", 1))


class _Clock:
    """Two callbacks around the others: wall time of each epoch, callbacks included."""

    def __init__(self):
        import keras

        clock = self
        self.times: list[float] = []
        self._start = 0.0

        class Start(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                clock._start = time.perf_counter()

        class End(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clock.times.append(time.perf_counter() - clock._start)

        self.start, self.end = Start(), End()


def _setup(recipe_name: str, every: int, seed: int, set_args: list[str], out: Path):
    from kflow.data.pipeline import make_dataset
    from kflow.insight.engine_hooks import InsightHooks
    from kflow.training.trainer import Trainer

    trainer = Trainer(recipe_name, overrides={"grad_log_every": every}, set_args=set_args,
                      seed=seed, verbose=0)
    splits = trainer.splits()
    batch_size, steps = trainer.batch_size(splits.train), trainer.steps_per_epoch(splits.train)
    model = trainer.build_model(splits.train)
    ds = make_dataset(splits.train.x, splits.train.y, batch_size, training=True, seed=seed)
    run_dir = out / f"every{every}"
    hooks = InsightHooks(run_dir, every, probe_x=splits.train.x, log=None)
    clock = _Clock()
    callbacks = [clock.start, *hooks.callbacks, clock.end]
    return {"model": model, "ds": ds, "callbacks": callbacks, "clock": clock,
            "samples": len(splits.train), "steps": steps, "epoch": 0}


def _fit(s, epochs: int) -> None:
    """Trains `epochs` more epochs in one `fit`; keeps the times of all but the first
    (whose figures include the once-per-fit set-up of the callbacks)."""
    before = len(s["clock"].times)
    s["model"].fit(s["ds"], epochs=s["epoch"] + epochs, initial_epoch=s["epoch"],
                   callbacks=s["callbacks"], verbose=0, shuffle=False)
    s["epoch"] += epochs
    del s["clock"].times[before]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="digits-cnn", help="recipe (default digits-cnn)")
    p.add_argument("--rounds", type=int, default=6, help="rounds (6)")
    p.add_argument("--epochs-per-round", type=int, default=3,
                   help="timed epochs per setting and round (3)")
    p.add_argument("--set", dest="set_args", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        setups = {name: _setup(args.recipe, every, args.seed, args.set_args, Path(tmp))
                  for name, every in SETTINGS}
        for s in setups.values():  # warm-up: tracing and first-epoch costs
            _fit(s, 1)
        names = [name for name, _ in SETTINGS]
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                _fit(setups[name], args.epochs_per_round + 1)
        any_setup = next(iter(setups.values()))
        timed = args.rounds * args.epochs_per_round
        print(f"gradient-norm logging cost: {args.recipe} "
              f"({any_setup['samples']} samples, {any_setup['steps']} steps/epoch), "
              f"{timed} timed epochs per setting; steps_per_execution as kflow chooses it "
              "(at most grad_log_every)")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"TF {tf.__version__}, GPUs: {len(tf.config.list_physical_devices('GPU'))}")
        print(f"\n{'logging':<16}{'spe':>4}{'epoch: best':>13}{'samples/s':>11}{'vs off':>9}"
              f"{'median':>12}{'samples/s':>11}{'vs off':>9}")
        best = {n: min(setups[n]["clock"].times) for n in names}
        median = {n: statistics.median(setups[n]["clock"].times) for n in names}
        for name in names:
            n = setups[name]["samples"]
            spe = setups[name]["model"].steps_per_execution
            print(f"{name:<16}{spe:>4}{best[name] * 1000:>10.1f} ms{n / best[name]:>11.0f}"
                  f"{(best[name] / best['off'] - 1) * 100:>+8.1f}%"
                  f"{median[name] * 1000:>9.1f} ms{n / median[name]:>11.0f}"
                  f"{(median[name] / median['off'] - 1) * 100:>+8.1f}%")
        print("\nbest: the fastest epoch (least disturbed by other work on the machine); "
              "median: the typical one.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
