"""`kflow cv`: k-fold cross-validation of a recipe."""

from __future__ import annotations

import argparse

from kflow.cli.common import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "cv", help="k-fold cross-validation (stratified for classification)",
        description="Cross-validate a recipe on its train + validation rows (the test split "
        "is never used): K folds from scikit-learn's StratifiedKFold / KFold, a fresh model "
        "with its preprocessing refitted per fold, early stopping on part of each fold's "
        "training rows. Prints each fold's metrics and their mean ± std, and writes cv.json "
        "and cv.csv.",
    )
    add_recipe_args(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs=N")
    p.add_argument("--out-dir", default=None,
                   help="folder for cv.json/cv.csv (default: runs/<recipe>-cv<K>-<hash>)")
    p.add_argument("--runs-root", default="runs", help="parent of the default --out-dir")
    p.add_argument("--quiet", action="store_true", help="no per-fold progress lines")
    p.set_defaults(func=run, needs_tensorflow=True)


def run(args: argparse.Namespace) -> int:
    from kflow.training.cross_validation import cross_validate

    result = cross_validate(
        args.recipe, folds=args.folds, set_args=args.set_args, epochs=args.epochs,
        seed=args.seed, out_dir=args.out_dir, runs_root=args.runs_root,
        verbose=0 if args.quiet else 1,
    )
    print(result.table())
    print(f"cv directory: {result.out_dir}")
    return 0
