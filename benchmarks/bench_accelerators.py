"""Accelerator benchmark: samples/s of kflow vs plain Keras on GPUs.

Run on a machine with one or more NVIDIA GPUs, as is:

    python benchmarks/bench_accelerators.py [--epochs 3] [--batch 256] [--rows 60000]

For digits-cnn and digits-resnet (the digits images tiled to `--rows` rows
so that an epoch is long enough to time), it measures training samples/s
(epochs after the first, which includes tracing) on:

- 1 GPU, float32 vs mixed_float16 vs mixed_bfloat16, XLA off vs on;
- 1 GPU vs all GPUs with MirroredStrategy (same global batch x GPUs):
  scaling efficiency = samples/s(all) / (N x samples/s(1));

each through kflow's Trainer (its pipeline and callbacks) and as plain Keras
(`model.fit` on a `tf.data` pipeline of the same model), one line each.
Where TensorFlow sees no GPU it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiled(part, rows):
    import numpy as np

    reps = max(1, rows // len(part))
    return np.tile(part.x, (reps,) + (1,) * (part.x.ndim - 1)), np.tile(part.y, reps)


def _time_fit(model, ds, epochs, rows):
    model.fit(ds, epochs=1, verbose=0)  # tracing, warm-up
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    return rows * epochs / (time.perf_counter() - start)


def _measure(recipe, precision, jit, strategy, batch, rows, epochs):
    """(kflow samples/s, plain Keras samples/s) for one setting."""
    import keras
    import tensorflow as tf

    from kflow.data.dataset import Dataset
    from kflow.training.accelerator import precision_policy
    from kflow.training.trainer import Trainer

    trainer = Trainer(recipe, set_args=[f"precision={precision}", f"jit_compile={jit}",
                                        f"batch_size={batch}", "grad_log_every=0",
                                        "deterministic=false"], verbose=0)
    trainer._strategy = strategy
    train = trainer.splits().train
    x, y = _tiled(train, rows)
    big = Dataset(x=x, y=y, task=train.task, class_names=train.class_names)
    model = trainer.build_model(big, insight=False)
    kflow_rate = _time_fit(model, trainer.dataset(big, training=True), epochs, len(x))

    with strategy.scope():
        with precision_policy(precision):
            plain = trainer.recipe.build_model(big)
        plain.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=jit, steps_per_execution=model.steps_per_execution)
    ds = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(batch)
          .prefetch(tf.data.AUTOTUNE))
    return kflow_rate, _time_fit(plain, ds, epochs, len(x))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="per-GPU batch")
    parser.add_argument("--rows", type=int, default=60000)
    parser.add_argument("--recipes", nargs="+", default=["digits-cnn", "digits-resnet"])
    args = parser.parse_args(argv)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("bench_accelerators: skipped: no GPU visible to TensorFlow")
        return 0
    import kflow  # noqa: F401 - registers the recipes

    one = tf.distribute.OneDeviceStrategy("/gpu:0")
    print(f"bench_accelerators: {len(gpus)} GPU(s) "
          f"({tf.config.experimental.get_device_details(gpus[0]).get('device_name', '?')}), "
          f"batch {args.batch}/GPU, {args.rows} rows, {args.epochs} timed epochs")
    print(f"{'recipe':<14} {'setting':<34} {'kflow samples/s':>16} {'keras samples/s':>16}")
    for recipe in args.recipes:
        single = {}
        for precision in ("float32", "mixed_float16", "mixed_bfloat16"):
            for jit in (False, True):
                k, p = _measure(recipe, precision, jit, one, args.batch, args.rows, args.epochs)
                single[(precision, jit)] = k
                print(f"{recipe:<14} {f'1 GPU {precision} xla={jit}':<34} {k:>16.0f} {p:>16.0f}",
                      flush=True)
        if len(gpus) > 1:
            mirrored = tf.distribute.MirroredStrategy()
            n = mirrored.num_replicas_in_sync
            k, p = _measure(recipe, "float32", False, mirrored, args.batch * n, args.rows,
                            args.epochs)
            eff = k / (n * single[("float32", False)])
            print(f"{recipe:<14} {f'{n} GPUs mirrored float32':<34} {k:>16.0f} {p:>16.0f}"
                  f"  scaling efficiency {eff:.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
