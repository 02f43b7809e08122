"""Kill -9 at random points of train, export and tune; then the server's hostile campaign.

Each campaign starts the real `kflow` command as a process, kills it with
SIGKILL at a random moment (seeded), checks what a kill must never leave
behind, re-runs the same command and checks the result:

- **train**: `kflow train digits-mlp` (dropout on, a few epochs). After the
  re-run the run is finished (`status.json`), `history.csv` has every epoch
  exactly once, the test metrics equal those of an uninterrupted run (exact
  resume), no temporary file is left and `backup/` is gone.
- **export**: `kflow export RUN --tflite float32` into a model base. Right
  after the kill every numeric version folder is complete (`saved_model.pb`,
  `variables/`), `models.config` parses, `RUN/export/` is absent or complete;
  the re-run publishes.
- **tune**: `kflow tune digits-mlp --max-trials 3`. After the re-run
  `trials.csv` lists each trial once and every trial completed.

Then, unless `--no-server`, it runs `bench_serve_reliability.py` (hostile
requests including the HTTP-layer cases, version swaps under load, RSS) and
prints everything as one table.

Usage:

    python benchmarks/bench_reliability.py                  # 10 kills each, then the server
    python benchmarks/bench_reliability.py --kills 3 --no-server
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN = ["train", "digits-mlp", "--set", "epochs=6", "--set", "dropout=0.2", "--set",
         "units=32", "--set", "hidden_layers=1", "--quiet"]
EXPORT = ["export", "{run}", "--tflite", "float32", "--base", "{base}", "--warmup-rows", "2",
          "--quiet"]
TUNE = ["tune", "digits-mlp", "--tuner", "random", "--max-trials", "3", "--max-epochs", "2",
        "--set", "units=16", "--set", "hidden_layers=1", "--quiet"]


@dataclass
class Campaign:
    """What one campaign saw."""

    name: str
    kills: int = 0
    finished: int = 0
    problems: list[str] = field(default_factory=list)
    epochs_lost: int = 0
    epochs_repeated: int = 0
    partial_versions: int = 0
    repeated_trials: int = 0
    metric_mismatches: int = 0


def kflow(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kflow", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_to_end(args: list[str], cwd: Path, timeout: float = 900) -> tuple[int, str]:
    proc = kflow(args, cwd)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def kill_after(args: list[str], cwd: Path, delay: float) -> bool:
    """Starts the command and SIGKILLs it after `delay` s; False if it ended first."""
    proc = kflow(args, cwd)
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*")
            if p.name.endswith(".tmp") or p.name.startswith((".tmp-", ".export-staging"))]


def history_epochs(path: Path) -> list[int]:
    with path.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def train_campaign(work: Path, kills: int, rng: random.Random) -> Campaign:
    c = Campaign("train")
    start = time.perf_counter()
    code, err = run_to_end([*TRAIN, "--run-dir", str(work / "reference")], work)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"reference training failed: {err}")
    reference = json.loads((work / "reference" / "metrics.json").read_text())
    for i in range(kills):
        run_dir = work / f"train-{i}"
        args = [*TRAIN, "--run-dir", str(run_dir)]
        c.kills += kill_after(args, work, rng.uniform(2.0, 0.9 * seconds))
        code, err = run_to_end(args, work)
        status = json.loads((run_dir / "status.json").read_text()) if code == 0 else {}
        if code or status.get("state") != "finished":
            c.problems.append(f"train-{i}: exit {code}: {err.strip()[-200:]}")
            continue
        c.finished += 1
        epochs = history_epochs(run_dir / "history.csv")
        expected = list(range(1, reference["epochs_run"] + 1))
        c.epochs_lost += len(set(expected) - set(epochs))
        c.epochs_repeated += len(epochs) - len(set(epochs))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        if metrics["test"] != reference["test"]:
            c.metric_mismatches += 1
            c.problems.append(f"train-{i}: test {metrics['test']} != {reference['test']}")
        if (run_dir / "backup").exists() or leftovers(run_dir):
            c.problems.append(f"train-{i}: left {leftovers(run_dir) or 'backup/'}")
    return c


def _version_complete(version_dir: Path) -> bool:
    return (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()


def export_campaign(work: Path, kills: int, rng: random.Random) -> Campaign:
    from kflow.export.model_base import read_models_config

    c = Campaign("export")
    run = work / "reference"
    fill = lambda base: [a.format(run=run, base=base) for a in EXPORT]  # noqa: E731
    start = time.perf_counter()
    code, err = run_to_end(fill(work / "export-reference"), work)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"reference export failed: {err}")
    for i in range(kills):
        base = work / f"base-{i}"
        c.kills += kill_after(fill(base), work, rng.uniform(0.5, 0.9 * seconds))
        for model_dir in [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []:
            for version in model_dir.iterdir():
                if version.name.isdigit() and not _version_complete(version):
                    c.partial_versions += 1
        if (base / "models.config").is_file():
            try:
                read_models_config(base / "models.config")
            except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
                c.problems.append(f"export-{i}: models.config unreadable after kill: {exc}")
        export_dir = run / "export"
        if export_dir.exists() and not (export_dir / "export.json").is_file():
            c.problems.append(f"export-{i}: {export_dir} incomplete after kill")
        code, err = run_to_end(fill(base), work)
        if code:
            c.problems.append(f"export-{i}: exit {code}: {err.strip()[-200:]}")
            continue
        c.finished += 1
        if leftovers(base) or leftovers(run):
            c.problems.append(f"export-{i}: left {leftovers(base) + leftovers(run)}")
    return c


def tune_campaign(work: Path, kills: int, rng: random.Random) -> Campaign:
    c = Campaign("tune")
    start = time.perf_counter()
    code, err = run_to_end([*TUNE, "--tune-dir", str(work / "tune-reference")], work)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"reference search failed: {err}")
    for i in range(kills):
        tune_dir = work / f"tune-{i}"
        args = [*TUNE, "--tune-dir", str(tune_dir)]
        c.kills += kill_after(args, work, rng.uniform(2.0, 0.9 * seconds))
        code, err = run_to_end(args, work)
        if code:
            c.problems.append(f"tune-{i}: exit {code}: {err.strip()[-200:]}")
            continue
        with (tune_dir / "trials.csv").open() as f:
            rows = list(csv.DictReader(f))
        ids = [r["trial_id"] for r in rows]
        c.repeated_trials += len(ids) - len(set(ids))
        if len(set(ids)) == 3 and all(r["status"].upper() == "COMPLETED" for r in rows):
            c.finished += 1
        else:
            c.problems.append(f"tune-{i}: trials {[(r['trial_id'], r['status']) for r in rows]}")
    return c


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10, help="kills per campaign (default 10)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--only", choices=["train", "export", "tune"], action="append",
                   help="run only these campaigns (repeatable)")
    p.add_argument("--no-server", action="store_true", help="skip the server campaign")
    p.add_argument("--hostile", type=int, default=6000,
                   help="hostile requests of the server campaign (default 6000)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kflow-reliability-"))
    campaigns = []
    try:
        for name, fn in (("train", train_campaign), ("export", export_campaign),
                         ("tune", tune_campaign)):
            if args.only and name not in args.only:
                continue
            if name == "export" and not (work / "reference").is_dir():
                train_campaign(work, 0, rng)  # the run to export
            t = time.perf_counter()
            campaigns.append(fn(work, args.kills, rng))
            print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
        server_rows: list[tuple[str, str]] = []
        server_code = 0
        if not args.no_server:
            import bench_serve_reliability as serve

            server_code = serve.run(argparse.Namespace(
                hostile=args.hostile, steady_seconds=60.0, swap_seconds=3.0, seed=args.seed,
                keep=False))
            server_rows = serve.LAST_ROWS
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| campaign | kills | runs finished | epochs lost | epochs repeated | partial "
          "versions seen | repeated trials | metrics differing from uninterrupted |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in campaigns:
        print(f"| {c.name} | {c.kills} | {c.finished}/{args.kills} | {c.epochs_lost} | "
              f"{c.epochs_repeated} | {c.partial_versions} | {c.repeated_trials} | "
              f"{c.metric_mismatches} |")
    for name, value in server_rows:
        print(f"| server: {name} | {value} | | | | | | |")
    problems = [x for c in campaigns for x in c.problems]
    for line in problems:
        print("  problem:", line)
    return 1 if problems or server_code else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
