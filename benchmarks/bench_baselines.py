"""The `tabular` recipe's defaults against scikit-learn baselines on the same splits.

For each table and seed, trains the `tabular` recipe with its defaults (the
shipped example with its own `example.yaml`) and reads the baselines kflow
fits on the same training split (`metrics.json` -> `baselines`). Prints, per
table, the median over the seeds of the network's test accuracy and of the
best baseline's, and the gap in points (regression: test MAE, gap in %).

Usage:

    python benchmarks/bench_baselines.py                   # 5 seeds, every table
    python benchmarks/bench_baselines.py --seeds 0,1 --tables wine,iris
    python benchmarks/bench_baselines.py --set units=64    # try other defaults

Tables: the shipped example (`recipes/example_tabular/example.yaml`) and
scikit-learn's bundled tables breast_cancer, wine, iris, digits (classification)
and diabetes (regression); linnerud (20 rows, 3 targets) is left out: its
test split would have 3 rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SKLEARN_TABLES = ("breast_cancer", "wine", "iris", "digits", "diabetes")


def _table_csv(name: str, folder: Path) -> Path:
    import pandas as pd
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    frame = pd.DataFrame(data.data, columns=[f"f{i}" for i in range(data.data.shape[1])])
    frame["target"] = data.target
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def run_one(table: str, seed: int, folder: Path, set_args: list[str]) -> dict:
    from kflow.training.trainer import Trainer

    if table == "example":
        recipe, extra = str(ROOT / "recipes/example_tabular/example.yaml"), []
    else:
        recipe = "tabular"
        extra = [f"path={_table_csv(table, folder)}", "target=target"]
        if table == "diabetes":
            extra.append("task=regression")
    trainer = Trainer(recipe, set_args=extra + set_args, seed=seed, verbose=0)
    metrics = trainer.run(save=False).metrics
    regression = trainer.splits().train.task == "regression"
    key = "mae" if regression else "accuracy"
    scores = {n: b["test"][key] for n, b in metrics.get("baselines", {}).items()}
    best = (min if regression else max)(scores, key=scores.get)
    return {"key": key, "network": metrics["test"][key], "best": best,
            "baseline": scores[best], **{f"b_{n}": v for n, v in scores.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--tables", default="example," + ",".join(SKLEARN_TABLES))
    p.add_argument("--set", dest="set_args", action="append", default=[])
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for table in args.tables.split(","):
            results = [run_one(table, s, Path(tmp), args.set_args) for s in seeds]
            key = results[0]["key"]
            net = statistics.median(r["network"] for r in results)
            base = statistics.median(r["baseline"] for r in results)
            names = sorted({r["best"] for r in results})
            if key == "accuracy":
                gap = f"{(net - base) * 100:+.1f} points"
            else:
                gap = f"{(net / base - 1) * 100:+.1f} % MAE"
            rows.append((table, key, net, base, "/".join(names), gap))
            print(f"{table}: {key} network {[round(r['network'], 4) for r in results]} "
                  f"best baseline {[round(r['baseline'], 4) for r in results]}", flush=True)
    print(f"\n| table | metric | network (median of {len(seeds)}) | best baseline (median) "
          "| best baseline | network - baseline |")
    print("|---|---|---|---|---|---|")
    for table, key, net, base, names, gap in rows:
        print(f"| {table} | test {key} | {net:.4f} | {base:.4f} | {names} | {gap} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
