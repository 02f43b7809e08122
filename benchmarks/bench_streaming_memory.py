"""Peak memory of training on a CSV larger than memory, streamed in chunks.

Writes a synthetic table of `--gb` gigabytes (8 numeric columns with gaps, a
city name, a yes/no flag, a binary label; ~95 bytes a row), then trains the
`tabular` recipe on it with `streaming: true` in a fresh process and prints
that process's peak resident memory (`ru_maxrss`) and the time taken; each line
the run prints comes with the memory at that point (`/proc/PID/status`:
VmRSS now, VmHWM the peak so far), which shows where the memory goes.

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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time
start = time.perf_counter()
import kflow
run = kflow.train("tabular", set_args=sys.argv[2:], run_dir=sys.argv[1], verbose=1,
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
        child = subprocess.Popen([sys.executable, "-u", "-c", CHILD, str(Path(tmp) / "run"),
                                  *sets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env)
        start = time.perf_counter()
        tail: list[str] = []

        def heartbeat() -> None:  # the memory every minute, between the run's lines
            while child.poll() is None:
                time.sleep(60)
                print(f"[{time.perf_counter() - start:6.0f} s, {_memory(child.pid)}]",
                      flush=True)

        threading.Thread(target=heartbeat, daemon=True).start()
        for line in child.stdout:  # the run's own lines, with the memory so far
            tail = (tail + [line.rstrip()])[-40:]
            if line.startswith(("kflow:", "PEAK", "SECONDS", "TEST", "TRAIN")):
                print(f"[{time.perf_counter() - start:6.0f} s, {_memory(child.pid)}] "
                      f"{line.rstrip()}", flush=True)
        child.wait()
        if child.returncode:
            print("\n".join(tail))
        print(f"CSV_GB {csv.stat().st_size / 1e9:.2f}")
        return child.returncode


def _memory(pid: int) -> str:
    """The child's resident memory now and its peak so far (`/proc/PID/status`)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "exited"
    found = {ln.split(":")[0]: int(ln.split()[1]) // 1024 for ln in status
             if ln.startswith(("VmRSS", "VmHWM"))}
    return f"RSS {found.get('VmRSS', 0)} MiB, peak {found.get('VmHWM', 0)} MiB"


if __name__ == "__main__":
    sys.exit(main())
