"""Peak memory of training on a CSV larger than memory, streamed in chunks.

Writes a synthetic table of `--gb` gigabytes (8 numeric columns with gaps, a
city name, a yes/no flag, a binary label; ~95 bytes a row), then trains the
`tabular` recipe on it with `streaming: true` in a fresh process and prints
that process's peak resident memory (`ru_maxrss`) and the time taken.

Usage:

    python benchmarks/bench_streaming_memory.py --gb 2          # the issue's figure
    python benchmarks/bench_streaming_memory.py --gb 0.2 --keep /tmp/big.csv

Not a timed test: the figure is for the README.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time
start = time.perf_counter()
import kflow
run = kflow.train("tabular", set_args=sys.argv[2:], run_dir=sys.argv[1], verbose=0,
                  overwrite=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"PEAK_RSS_MB {peak:.0f}")
print(f"SECONDS {time.perf_counter() - start:.0f}")
print(f"TEST {run.metrics['test']}")
print(f"TRAIN_ROWS {run.metrics.get('epochs_run')} epochs")
"""


def write_csv(path: Path, gigabytes: float, seed: int = 0) -> int:
    """Writes the table in blocks of 200,000 rows; returns the number of rows."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    target_bytes, rows, block = gigabytes * 1e9, 0, 200_000
    cities = np.array(["Lyon", "Paris", "Nice", "Lille", "Brest", "Metz"])
    with open(path, "w") as f:
        header = True
        while f.tell() < target_bytes:
            x = rng.normal(size=(block, 8)).round(4)
            x[rng.random(x.shape) < 0.02] = np.nan
            city = rng.choice(cities, size=block)
            flag = rng.choice(["yes", "no"], size=block)
            logit = x[:, 0] - 0.5 * np.nan_to_num(x[:, 1]) + (flag == "yes") * 0.7
            label = np.where(rng.random(block) < 1 / (1 + np.exp(-np.nan_to_num(logit))),
                             "pass", "fail")
            frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(8)])
            frame["city"], frame["tutored"], frame["result"] = city, flag, label
            frame.to_csv(f, header=header, index=False)
            header = False
            rows += block
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gb", type=float, default=2.0, help="CSV size in GB (default 2)")
    p.add_argument("--keep", default=None, help="write the CSV here and keep it")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2048)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(args.keep) if args.keep else Path(tmp) / "big.csv"
        if not csv.is_file():
            start = time.perf_counter()
            rows = write_csv(csv, args.gb)
            print(f"wrote {csv} ({csv.stat().st_size / 1e9:.2f} GB, {rows} rows) in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        sets = [f"path={csv}", "target=result", "streaming=true", f"epochs={args.epochs}",
                f"batch_size={args.batch_size}", "grad_log_every=0", "early_stopping=false"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "run"), *sets],
                             capture_output=True, text=True, env=env)
        lines = [ln for ln in out.stdout.splitlines() if ln.split(" ")[0].isupper()]
        print("\n".join(lines) or out.stderr[-3000:])
        print(f"CSV_GB {csv.stat().st_size / 1e9:.2f}")
        return out.returncode


if __name__ == "__main__":
    sys.exit(main())
