"""`kflow train`: train a recipe end to end."""

from __future__ import annotations

import argparse

from kflow.cli.common import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train, evaluate and save a recipe",
        description="Train a recipe, evaluate it on the held-out test split and write a run "
        "directory (config.yaml, history.csv, metrics.json, model.keras, checkpoints, "
        "TensorBoard logs). Re-running the same command after a crash resumes it.",
    )
    add_recipe_args(p)
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set epochs=N")
    p.add_argument("--run-dir", default=None,
                   help="run directory (default: runs/<recipe>-<config hash>)")
    p.add_argument("--runs-root", default="runs", help="parent of default run directories")
    p.add_argument("--strategy", default="auto",
                   choices=["auto", "default", "mirrored", "tpu", "multi_worker"],
                   help="tf.distribute strategy (auto: a multi-worker job when TF_CONFIG or a "
                        "SLURM step names several tasks, else TPU, else several GPUs, else "
                        "default). The global batch is the recipe's batch_size, split across "
                        "all replicas of all workers")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="start N local worker processes of one multi-worker job (TF_CONFIG on "
                        "free loopback ports); only worker 0 writes the run directory")
    p.add_argument("--peer-timeout", type=float, default=None, metavar="S",
                   help="a multi-worker worker that sees no step finish for S seconds (a peer "
                        "died or hangs) exits with status 3 (default 120; KFLOW_PEER_TIMEOUT)")
    p.add_argument("--precision", default=None,
                   choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   help="shortcut for --set precision=...")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic TF ops even on GPUs (exact reproducibility, slower); "
                        "default: on without a GPU, off with GPUs; config.yaml records it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--profile-steps", default=None, metavar="A:B",
                   help="write a TensorBoard profile of training steps A to B (counted from 1) "
                        "to RUN/tensorboard")
    p.add_argument("--track", default=None, choices=["none", "mlflow"],
                   help="also log params, per-epoch metrics, model and report to MLflow "
                        "(pip install 'kflow[mlflow]'; MLFLOW_TRACKING_URI, else ./mlruns)")
    p.set_defaults(func=run, needs_tensorflow=True)


def run(args: argparse.Namespace) -> int:
    import os

    from kflow.errors import ConfigError

    if args.peer_timeout is not None:
        if args.peer_timeout <= 0:
            raise ConfigError(f"--peer-timeout must be > 0 seconds. Got {args.peer_timeout}.")
        os.environ["KFLOW_PEER_TIMEOUT"] = str(args.peer_timeout)
    if args.workers is not None:
        from kflow.cli.launch import launch_from_cli

        return launch_from_cli(args)
    if args.precision:
        args.set_args = [*args.set_args, f"precision={args.precision}"]
    if args.deterministic:
        args.set_args = [*args.set_args, "deterministic=true"]
    from kflow.training.engine import train

    result = train(
        args.recipe, set_args=args.set_args, epochs=args.epochs, run_dir=args.run_dir,
        runs_root=args.runs_root, seed=args.seed, strategy=args.strategy,
        overwrite=args.overwrite, verbose=0 if args.quiet else "auto",
        profile_steps=args.profile_steps, track=args.track,
    )
    test = result.metrics.get("test", {})
    if "accuracy" in test:
        print(f"test accuracy: {test['accuracy']:.4f}")
    print(f"run directory: {result.run_dir}")
    return 0
