"""Hyperband vs. random search with the same total epoch budget.

Both search the recipe's declared space with `kflow.tune`. Hyperband's plan
(KerasTuner's, `--max-epochs E`, `--factor F`) fixes its budget: the sum of
the epochs its trials are given. Random search gets about the same budget:
the nearest whole number of trials of E epochs each. For each seed the
script prints the best validation score each reached, the epochs each was
given and actually trained (early stopping stops some trials sooner), and
the epochs each had trained, counted in trial order, when a trial first
reached the target score.

Hyperband trains every trial from scratch (kflow does not warm-start a
promoted trial from its earlier checkpoint), so its budget counts a promoted
configuration's epochs again; that is what makes `best.yaml` reproducible.

Usage:

    python benchmarks/bench_tuners.py
    python benchmarks/bench_tuners.py --recipe breast-cancer-mlp --target 0.97 \\
        --max-epochs 9 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _epochs_to_target(trials, target: float, maximize: bool) -> int | None:
    """Epochs trained (in trial order) until the first trial at or beyond `target`."""
    spent = 0
    for t in trials:
        spent += int(t.epochs_spent or 0)
        if t.completed and (t.score >= target if maximize else t.score <= target):
            return spent
    return None


def _run(tuner: str, args, seed: int, root: Path, max_trials: int | None):
    import kflow

    start = time.perf_counter()
    result = kflow.tune(
        args.recipe, tuner=tuner, max_epochs=args.max_epochs, factor=args.factor,
        max_trials=max_trials, seed=seed, objective=args.objective, set_args=args.set,
        tune_dir=root / f"{tuner}-seed{seed}", verbose=0,
    )
    seconds = time.perf_counter() - start
    maximize = result.objective.direction == "max"
    trials = result.trials
    return {
        "tuner": tuner, "seed": seed, "trials": len(trials),
        "best": result.best.score if result.best else float("nan"),
        "budget": sum(int(t.epochs or 0) for t in trials),
        "trained": sum(int(t.epochs_spent or 0) for t in trials),
        "to_target": _epochs_to_target(trials, args.target, maximize),
        "seconds": seconds, "objective": result.objective.name,
    }


def main(argv=None) -> int:
    from kflow.cli.quiet import import_tensorflow_quietly
    from kflow.tuning import hyperband_schedule

    import_tensorflow_quietly()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="digits-mlp")
    p.add_argument("--max-epochs", type=int, default=9, help="Hyperband's max epochs; the "
                   "epochs of each random-search trial")
    p.add_argument("--factor", type=int, default=3)
    p.add_argument("--objective", default=None, help="default: val_accuracy")
    p.add_argument("--target", type=float, default=0.95, help="score to reach")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (searches per tuner)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a hyperparameter for both searches")
    p.add_argument("--out", default=None, help="keep the tuning directories here")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    plan = hyperband_schedule(args.max_epochs, args.factor)
    budget = sum(n * e for _, _, n, e in plan)
    random_trials = max(1, round(budget / args.max_epochs))  # the nearest equal budget
    print(f"recipe {args.recipe}; Hyperband max_epochs={args.max_epochs}, factor={args.factor}: "
          f"{sum(n for _, _, n, _ in plan)} trials, {budget} epochs; random search: "
          f"{random_trials} trials x {args.max_epochs} epochs = "
          f"{random_trials * args.max_epochs} epochs; target {args.target}", flush=True)

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_tuners-"))
    results = []
    for seed in seeds:
        for tuner, cap in (("hyperband", None), ("random", random_trials)):
            r = _run(tuner, args, seed, root, cap)
            results.append(r)
            print(f"  seed {seed} {tuner:<9} best {r['objective']} {r['best']:.4f}, "
                  f"{r['trials']} trials, {r['budget']} epochs given / {r['trained']} trained,"
                  f" target reached after "
                  f"{r['to_target'] if r['to_target'] is not None else 'never'} epochs "
                  f"({r['seconds']:.0f} s)", flush=True)

    print()
    head = f"{'tuner':<10}{'best (median)':>15}{'epochs given':>14}{'epochs trained':>16}" \
           f"{'epochs to ' + str(args.target):>18}{'reached':>9}{'seconds':>9}"
    print(head)
    for tuner in ("hyperband", "random"):
        rs = [r for r in results if r["tuner"] == tuner]
        reached = [r["to_target"] for r in rs if r["to_target"] is not None]
        to_target = f"{statistics.median(reached):.0f}" if reached else "never"
        print(f"{tuner:<10}{statistics.median(r['best'] for r in rs):>15.4f}"
              f"{statistics.median(r['budget'] for r in rs):>14.0f}"
              f"{statistics.median(r['trained'] for r in rs):>16.0f}{to_target:>18}"
              f"{f'{len(reached)}/{len(rs)}':>9}"
              f"{statistics.median(r['seconds'] for r in rs):>9.0f}")
    print(f"\n(epochs to target: median over the seeds that reached it; tuning directories "
          f"in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
