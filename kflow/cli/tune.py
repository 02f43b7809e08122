"""`kflow tune`: hyperparameter search over a recipe's declared space."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from kflow.cli.common import add_recipe_args

EPILOG = """\
search specs (--search NAME=SPEC, repeatable; a YAML config's search: block takes the same):
  dropout=0.0:0.5            a range           learning_rate=1e-4:1e-2:log   a log range
  units=32:256:32            a range, step 32  optimizer=adam,sgd,rmsprop    a choice
The recipe's declared ranges are searched unless --set fixes a value or --search-only is
given; momentum / nesterov are searched only in trials whose optimizer uses them.

examples:
  kflow tune digits-mlp --tuner hyperband --max-epochs 9
  kflow tune digits-mlp --tuner random --max-trials 20 --search dropout=0.0:0.5
  kflow tune digits-mlp --tuner grid --search-only --search units=32,64 \\
      --search optimizer=adam,sgd --max-trials 4
  kflow tune breast-cancer-mlp --cv 5 --objective val_auc --retrain
  kflow train runs/tune-digits-mlp-hyperband-*/best.yaml

distributed: run the same command in several processes with KERASTUNER_TUNER_ID=chief
(serves the oracle; KERASTUNER_ORACLE_PORT=0 picks a free port, written to chief.json)
and KERASTUNER_TUNER_ID=tuner0, tuner1, ... plus KERASTUNER_ORACLE_IP/PORT (workers).
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune", help="search hyperparameters with KerasTuner",
        description="Search a recipe's hyperparameters (its declared search space, changed by "
        "--search) with KerasTuner; every trial trains with kflow's engine into "
        "TUNE_DIR/trials/<id>/. Writes trials.csv, report.html and best.yaml (kflow train "
        "accepts it as is). Re-running the same command resumes an interrupted search.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_args(p)
    p.add_argument("--tuner", default="random",
                   help="random, grid, bayesian or hyperband (default random)")
    p.add_argument("--max-trials", type=int, default=None,
                   help="trials to run (default 10; for hyperband a cap on its schedule)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epochs per trial, the most a hyperband trial gets (default: the "
                        "recipe's epochs)")
    p.add_argument("--objective", default=None,
                   help="logged metric to optimize, e.g. val_accuracy, val_loss, val_auc; "
                        "NAME:max|min sets the direction (default val_accuracy, else val_loss)")
    p.add_argument("--search", dest="search_args", action="append", default=[],
                   metavar="NAME=SPEC", help="narrow, widen or add a searched hyperparameter "
                   "(repeatable), e.g. --search dropout=0.0:0.5")
    p.add_argument("--search-only", action="store_true",
                   help="search only the hyperparameters named by --search / search:")
    p.add_argument("--cv", type=int, default=None, metavar="K",
                   help="score each trial by the mean of K-fold cross-validation of "
                        "train + validation")
    p.add_argument("--tune-dir", default=None,
                   help="tuning directory (default runs/tune-<recipe>-<tuner>-<hash>)")
    p.add_argument("--tunes-root", default="runs", help="parent of default tuning directories")
    p.add_argument("--retrain", action="store_true",
                   help="retrain the best configuration on train + validation")
    p.add_argument("--overwrite", action="store_true",
                   help="delete a previous search in the tuning directory first")
    p.add_argument("--factor", type=int, default=3, help="hyperband's reduction factor")
    p.add_argument("--hyperband-iterations", type=int, default=1,
                   help="hyperband's iterations")
    p.add_argument("--max-failures", type=int, default=5,
                   help="stop after this many failed trials in a row (default 5)")
    p.add_argument("--oracle-bind", default=None, metavar="ADDR",
                   help="distributed search, chief only: the address the oracle listens on "
                   "(default 127.0.0.1, loopback only, since KerasTuner's oracle has no "
                   "authentication). Give this node's address for workers on other nodes of "
                   "a trusted network")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--track", default=None, choices=["none", "mlflow"],
                   help="log every trial to MLflow as a nested run of one parent run")
    p.set_defaults(func=run, needs_tensorflow=True)


def run(args: argparse.Namespace) -> int:
    from kflow.tracking import tracking_parent
    from kflow.tuning.search import TuneOptions, tune

    if args.oracle_bind:
        os.environ["KFLOW_ORACLE_BIND"] = args.oracle_bind
    # --track mlflow: each trial's `kflow.train` logs a run nested under this parent.
    with tracking_parent(args.track, f"kflow tune {args.recipe}",
                         {"tuner": args.tuner, "max_trials": args.max_trials}):
        result = tune(
            args.recipe, tuner=args.tuner, max_trials=args.max_trials,
            max_epochs=args.max_epochs, objective=args.objective, set_args=args.set_args,
            search_args=args.search_args, search_only=args.search_only, cv=args.cv,
            tune_dir=args.tune_dir, seed=args.seed, retrain=args.retrain,
            overwrite=args.overwrite, verbose=0 if args.quiet else 1,
            options=TuneOptions(
                factor=args.factor, hyperband_iterations=args.hyperband_iterations,
                max_consecutive_failed_trials=args.max_failures, tunes_root=args.tunes_root,
                command=("kflow " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["tune"]
                         else None)),
        )
    if result.best is not None:
        print(f"best {result.objective.name}: {result.best.score:.4f} "
              f"(trial {result.best.trial_id})")
        print(f"best configuration: {result.best_yaml}")
        if result.retrained is not None:
            print(f"retrained model: {result.retrained.run_dir}")
    print(f"tuning directory: {result.tune_dir}")
    return 0
