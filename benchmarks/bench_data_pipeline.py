"""Input-pipeline throughput: kflow's tf.data pipeline vs. feeding pandas / NumPy directly.

One table (numeric columns with missing values, a text category, a yes/no
column; `--rows` rows) is fed, side by side in one run, by:

* kflow: `kflow.data.make_dataset(columns, y, batch, training=True)` --
  `from_tensor_slices`, `cache`, per-epoch `shuffle`, `batch`, `prefetch`;
* NumPy: a Python loop that shuffles an index each epoch and slices the dict
  of column arrays per batch (what a hand-written feed does);
* pandas: the same loop with `DataFrame.iloc[batch_index]`, converting each
  batch's columns to arrays.

Two measurements, both in samples/second (steady state: after one warm-up
epoch, median over `--repeats`, variants interleaved in a rotating order so
that noise from other work on the machine hits them alike):

1. pipeline only: pull every batch of an epoch into Python (this favours
   NumPy: a tf.data iterator pays an eager per-batch cost that `model.fit`,
   which consumes the dataset inside its graph, does not);
2. training: `model.fit` of the `tabular` recipe's model (preprocessing layers
   inside the model, two hidden layers) for one epoch, fed by each variant
   (NumPy also as Keras' own array adapter, `fit(dict_of_arrays, y)`).

Usage:

    python benchmarks/bench_data_pipeline.py
    python benchmarks/bench_data_pipeline.py --rows 200000 --repeats 5 --batch-size 512
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def make_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """A table like recipes/example_tabular/students.csv, `rows` rows long."""
    rng = np.random.default_rng(seed)
    hours = rng.uniform(0, 12, rows)
    previous = rng.normal(68, 12, rows).clip(20, 100)
    sleep = rng.normal(7, 1.2, rows)
    school = rng.choice(["Northside", "Riverside", "Hilltop", "Lakeview"], rows)
    tutoring = rng.choice(["yes", "no"], rows)
    absences = rng.poisson(3, rows).astype(float)
    logit = 0.6 * (hours - 6) + 0.09 * (previous - 68) + 0.5 * (sleep - 7) - 0.3 * absences
    frame = pd.DataFrame({
        "hours_studied": hours, "sleep_hours": sleep, "previous score": previous,
        "school": school.astype(object), "tutoring": tutoring.astype(object),
        "absences": absences,
        "result": np.where(rng.uniform(size=rows) < 1 / (1 + np.exp(-logit)), "pass", "fail"),
    })
    for column in ("hours_studied", "sleep_hours", "school"):
        frame.loc[rng.uniform(size=rows) < 0.05, column] = np.nan
    return frame


def _strings_as_tensors(batch: dict) -> dict:
    """Keras' generator adapter cannot take NumPy object (string) arrays."""
    import tensorflow as tf

    return {k: tf.constant(v) if v.dtype == object else v for k, v in batch.items()}


def numpy_batches(x: dict, y: np.ndarray, batch: int, seed: int,
                  for_keras: bool = False) -> Iterator[tuple]:
    rng = np.random.default_rng(seed)
    while True:
        index = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            take = index[start:start + batch]
            cols = {k: v[take] for k, v in x.items()}
            yield (_strings_as_tensors(cols) if for_keras else cols), y[take]


def pandas_batches(frame: pd.DataFrame, keys: dict, kinds: dict, y: np.ndarray, batch: int,
                   seed: int, for_keras: bool = False) -> Iterator[tuple]:
    rng = np.random.default_rng(seed)
    while True:
        index = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            take = index[start:start + batch]
            rows = frame.iloc[take]
            cols = {}
            for column, key in keys.items():
                values = rows[column]
                if kinds[key] == "categorical":
                    cols[key] = values.fillna("").astype(str).to_numpy(dtype=object)
                elif kinds[key] == "boolean":
                    cols[key] = (values == "yes").to_numpy(dtype="float32")
                else:
                    cols[key] = values.to_numpy(dtype="float32")
            yield (_strings_as_tensors(cols) if for_keras else cols), y[take]


def timed(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-training", action="store_true",
                        help="measure the pipelines only, without model.fit")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import kflow
    from kflow.data import load_table, make_dataset

    tf.get_logger().setLevel("ERROR")
    frame = make_table(args.rows)
    data = load_table(frame, "result")
    keys = {spec["column"]: key for key, spec in data.meta["columns"].items()}
    kinds = {key: spec["kind"] for key, spec in data.meta["columns"].items()}
    x, y, bs, n = data.x, data.y, args.batch_size, len(data)
    steps = -(-n // bs)
    print(f"{n} rows, {len(x)} columns, batch {bs}, {steps} batches/epoch; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {platform.processor() or 'cpu'}, "
          f"{os.cpu_count()} CPUs")

    # -- 1. pipeline only ---------------------------------------------------------
    kflow_ds = make_dataset(x, y, bs, training=True, seed=0)
    iters = {
        "kflow make_dataset (tf.data)": lambda: iter(kflow_ds.repeat()),
        "NumPy slicing loop": lambda: numpy_batches(x, y, bs, 0),
        "pandas iloc loop": lambda: pandas_batches(frame, keys, kinds, y, bs, 0),
    }
    live = {name: make() for name, make in iters.items()}

    def epoch(it: Iterator) -> int:
        seen = 0
        for _ in range(steps):
            bx, by = next(it)
            seen += len(by)
        return seen

    for it in live.values():
        epoch(it)  # warm up: fills kflow's cache, like a first epoch
    pipeline = {name: [] for name in live}
    for r in range(args.repeats):
        order = list(live)[r % len(live):] + list(live)[:r % len(live)]
        for name in order:
            pipeline[name].append(timed(lambda name=name: epoch(live[name])))
    _report("batches delivered to Python, no model (tf.data pays an eager per-batch cost "
            "here that model.fit does not)", pipeline,
            "kflow make_dataset (tf.data)")
    if args.no_training:
        return

    # -- 2. training --------------------------------------------------------------
    recipe = kflow.get_recipe_class("tabular")(seed=0)  # its default model, on this table
    models = {}
    feeds = {
        "kflow make_dataset (tf.data)": lambda: kflow_ds,
        "Keras array adapter (fit on NumPy)": None,
        "NumPy slicing loop (generator)": lambda: numpy_batches(x, y, bs, 0, True),
        "pandas iloc loop (generator)": lambda: pandas_batches(frame, keys, kinds, y, bs, 0,
                                                               True),
    }
    for name in feeds:
        keras.utils.set_random_seed(0)
        model = recipe.build_model(data)
        model.compile("adam", "binary_crossentropy", steps_per_execution=8)
        models[name] = model
    feeders = {name: (make() if make else None) for name, make in feeds.items()}

    def fit(name: str) -> int:
        model, feed = models[name], feeders[name]
        if feed is None:
            model.fit(x, y, batch_size=bs, epochs=1, shuffle=True, verbose=0)
        elif isinstance(feed, tf.data.Dataset):
            model.fit(feed, epochs=1, verbose=0)
        else:
            model.fit(feed, steps_per_epoch=steps, epochs=1, verbose=0)
        return n

    for name in feeds:
        fit(name)  # warm up: tracing and compilation
    training = {name: [] for name in feeds}
    for r in range(args.repeats):
        order = list(feeds)[r % len(feeds):] + list(feeds)[:r % len(feeds)]
        for name in order:
            training[name].append(timed(lambda name=name: fit(name)))
    _report("training (model.fit, one epoch, preprocessing layers in the model)", training,
            "kflow make_dataset (tf.data)")


def _report(title: str, results: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(results[baseline])
    width = max(map(len, results))
    print(f"\n{title}")
    print(f"  {'feed':<{width}}  {'samples/s':>12}  {'vs kflow':>8}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"  {name:<{width}}  {med:>12,.0f}  {med / base:>7.2f}x")


if __name__ == "__main__":
    main()
