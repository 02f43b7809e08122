"""int8 TFLite of every shipped recipe: size and accuracy next to float32, gate verdict.

Trains each recipe of the catalog with its defaults (in a temporary folder),
exports float32 and int8 TFLite through `kflow.export_run` with the accuracy
gate off (so that a failing variant is still measured), and prints one table:
file sizes, test accuracy (or MAE for regression) of Keras, float32 and int8,
and whether int8 would pass the default gate (at most 1 point of accuracy,
or 5 % of MAE, lost against float32).

Recipes that need user data get a local stand-in: `tabular` the shipped
example table, `images` a generated folder of PNGs; `tfds` is skipped (it
needs a dataset on disk). Text ships its tokenizer as a sidecar (the string
ops do not convert), and so does `tabular` (string lookups).

Usage:

    python benchmarks/bench_int8_catalog.py                  # every recipe (~20 min, 2 cores)
    python benchmarks/bench_int8_catalog.py --only digits-cnn --only breast-cancer-mlp
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXAMPLE = REPO / "recipes" / "example_tabular" / "example.yaml"
SIDECAR = {"tabular", "text-classifier"}
SKIP = {"tfds": "needs a TFDS dataset on disk"}


def _image_folder(root: Path) -> str:
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True)
        for i in range(40):
            img = rng.integers(0, 160, size=(32, 32, 3)).astype("uint8")
            img[..., c] = rng.integers(200, 256)
            keras.utils.save_img(root / name / f"{i}.png", img)
    return str(root)


def _sets(name: str, tmp: Path) -> list[str]:
    if name == "images":
        return [f"path={_image_folder(tmp / 'photos')}"]
    if name == "digits-transfer":
        return [f"pretrain_dir={tmp / 'pretrain'}"]
    return []


def _measure(name: str, tmp: Path) -> dict:
    import kflow

    start = time.perf_counter()
    spec = str(EXAMPLE) if name == "tabular" else name  # the shipped example's settings
    run = kflow.train(spec, set_args=_sets(name, tmp), run_dir=tmp / "run", verbose=0)
    seconds = time.perf_counter() - start
    opts = {"max_accuracy_drop": 100.0, "max_error_increase": 1e6, "warmup_rows": 0}
    if name in SIDECAR:
        opts["tflite_preprocessing"] = "sidecar"
    result = kflow.export_run(run.run_dir, base=tmp / "base", tflite="float32,int8", **opts)
    variants = result.report["tflite"]["variants"]
    row = {"recipe": name, "train_s": round(seconds), "task": run.info.get("task")}
    for v in ("float32", "int8"):
        info = variants.get(v, {})
        row[f"{v}_bytes"] = info.get("size_bytes") or info.get("bytes")
        row[f"{v}_acc"] = info.get("accuracy")
        row[f"{v}_mae"] = info.get("mae")
    test = run.metrics.get("test", {})
    row["keras_acc"], row["keras_mae"] = test.get("accuracy"), test.get("mae")
    if row["int8_acc"] is not None and row["float32_acc"] is not None:
        row["gate"] = 100 * (row["float32_acc"] - row["int8_acc"]) <= 1.0
    elif row["int8_mae"] is not None and row["float32_mae"]:
        row["gate"] = row["int8_mae"] <= 1.05 * row["float32_mae"]
    else:
        row["gate"] = None
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", help="recipes to measure (repeatable)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    import kflow

    names = args.only or list(kflow.list_recipes())
    rows, problems = [], []
    for name in names:
        if name in SKIP:
            print(f"{name}: skipped ({SKIP[name]})", flush=True)
            continue
        with tempfile.TemporaryDirectory(prefix="kflow-int8-") as tmp:
            try:
                row = _measure(name, Path(tmp))
            except Exception as exc:  # one line per recipe that cannot be measured
                problems.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                print(problems[-1], flush=True)
                continue
        rows.append(row)
        print(json.dumps(row), flush=True)

    def fmt(v, kind):
        if v is None:
            return "-"
        return {"kib": f"{v / 1024:.1f} KiB", "pct": f"{100 * v:.2f} %", "mae": f"{v:.3f}"}[kind]

    print()
    print("| recipe | float32 size | int8 size | Keras | float32 | int8 | int8 passes the gate |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        kind = "pct" if r["float32_acc"] is not None else "mae"
        key = "acc" if kind == "pct" else "mae"
        keras_v = r["keras_acc"] if kind == "pct" else r["keras_mae"]
        print(f"| {r['recipe']} | {fmt(r['float32_bytes'], 'kib')} | "
              f"{fmt(r['int8_bytes'], 'kib')} | {fmt(keras_v, kind)} | "
              f"{fmt(r[f'float32_{key}'], kind)} | {fmt(r[f'int8_{key}'], kind)} | "
              f"{'yes' if r['gate'] else 'no' if r['gate'] is not None else '-'} |")
    for line in problems:
        print("  problem:", line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
