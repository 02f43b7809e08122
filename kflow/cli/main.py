"""The `kflow` command line: parse, call the library, print."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

from kflow.cli import compare as compare_cmd
from kflow.cli import cv as cv_cmd
from kflow.cli import doctor as doctor_cmd
from kflow.cli import export as export_cmd
from kflow.cli import inspect_model as inspect_cmd
from kflow.cli import lr_find as lr_find_cmd
from kflow.cli import predict as predict_cmd
from kflow.cli import recipes as recipes_cmd
from kflow.cli import report as report_cmd
from kflow.cli import serve as serve_cmd
from kflow.cli import train as train_cmd
from kflow.cli import tune as tune_cmd
from kflow.cli.common import add_global_args

COMMANDS = {
    "train": train_cmd,
    "recipes": recipes_cmd,
    "cv": cv_cmd,
    "doctor": doctor_cmd,
    "report": report_cmd,
    "compare": compare_cmd,
    "lr-find": lr_find_cmd,
    "inspect": inspect_cmd,
    "tune": tune_cmd,
    "export": export_cmd,
    "serve": serve_cmd,
    "predict": predict_cmd,
}

DESCRIPTION = """\
kflow trains Keras models from declared recipes, with the good practices built in.

examples:
  kflow recipes                          list the recipes
  kflow recipes show digits-cnn          hyperparameters of one recipe
  kflow train digits-cnn                 train, evaluate, write runs/digits-cnn-*/
  kflow train digits-cnn --set dropout=0.3 --set optimizer.learning_rate=3e-4
  kflow --devices 2 train digits-mlp --strategy mirrored   2 replicas on one CPU
  kflow doctor runs/digits-cnn-1a2b3c4d  what went wrong and what to change
  kflow compare runs/a runs/b            curves and metrics side by side
  kflow lr-find digits-cnn               suggest a learning rate (range test)
  kflow inspect lecture-mlp --set hidden_layers=12   activation spread per layer at init
  kflow train my.yaml --epochs 5         a YAML file: 'recipe: NAME' plus overrides
  kflow cv breast-cancer-mlp --folds 5   k-fold cross-validation, mean ± std
  kflow export RUN_DIR --tflite all      SavedModel for TF Serving, TFLite variants
  kflow serve exports                    TF Serving's REST API on a model base (port 8501)
  kflow predict digits-cnn rows.json     send rows to a TF Serving-compatible server
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kflow", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


class _ArgumentError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # the command as given (kflow train --workers N restarts it N times)
    if args.command is None:
        parser.print_help()
        return 2
    from kflow.errors import KflowError
    from kflow.gc_policy import tuned_gc

    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(tuned_gc())  # the command owns this process: see gc_policy
            if getattr(args, "needs_tensorflow", False):
                from kflow.cli.common import check_recipe_early
                from kflow.cli.quiet import quiet_stderr

                with quiet_stderr(debug):  # a recipe's own imports may start TensorFlow
                    check_recipe_early(args)
                if not getattr(args, "workers", None):
                    _start_tensorflow(args.devices, debug, stack, (
                        getattr(args, "intra_op_threads", 0),
                        getattr(args, "inter_op_threads", 0)))
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe fails here, not at exit
            return code
    except BrokenPipeError:
        return _stdout_closed()
    except KflowError as exc:
        if debug:
            traceback.print_exc()
        print(f"kflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a wall of text
        if debug:
            traceback.print_exc()
        else:
            msg = str(exc).strip().splitlines()
            print(f"kflow: error: {type(exc).__name__}: {msg[0] if msg else ''} "
                  "(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _start_tensorflow(devices: int | None, debug: bool, stack: contextlib.ExitStack,
                      op_threads: tuple[int, int] = (0, 0)) -> None:
    """Imports TensorFlow for a command: quietly, on `devices` logical CPUs, noise filtered,
    with `op_threads` (intra-op, inter-op; 0: TensorFlow decides)."""
    from kflow.errors import ConfigError

    if devices is not None and devices < 1:
        raise ConfigError(f"--devices must be an int >= 1. Got {devices} instead.")
    from kflow.cli.quiet import configure_before_devices, filter_stderr, import_tensorflow_quietly

    if debug:  # everything visible
        configure_before_devices(devices, op_threads)
        return

    import_tensorflow_quietly(devices, op_threads)
    stack.enter_context(filter_stderr())


def _stdout_closed() -> int:
    """The reader of stdout went away (`kflow recipes show X | head`): stop quietly."""
    try:  # later writes and the flush at exit go nowhere instead of raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
