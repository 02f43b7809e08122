"""`kflow export`: a finished run -> SavedModel in a TF Serving base, TFLite variants."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  kflow export runs/digits-cnn-1a2b3c4d                      SavedModel -> exports/digits-cnn/N
  kflow export runs/digits-cnn-1a2b3c4d --tflite all         + float32, float16, dynamic, int8
  kflow export RUN --base /srv/models --name digits --version 3 --overwrite
  kflow export RUN --tflite int8 --int8-io --max-accuracy-drop 0.5
  kflow export RUN --tflite float32 --tflite-preprocessing sidecar   (string preprocessing)

Serve the base with TF Serving: see serving/README.md. Run a .tflite file on a
device with tflite/kflow_tflite_runner.py (LiteRT + NumPy only).
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a run: SavedModel for TF Serving, TFLite variants",
        description="Export a finished run: a SavedModel with a serving_default signature "
        "of named raw inputs, published atomically as BASE/NAME/VERSION with TF Serving "
        "warmup records and BASE/models.config; optionally TFLite variants evaluated in the "
        "LiteRT interpreter against an accuracy gate. Every artifact is checked against the "
        "Keras model before anything is published; RUN_DIR/export/export.json holds the "
        "figures.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--name", default=None, help="model name in the base (default: the recipe)")
    p.add_argument("--base", default="exports", metavar="DIR",
                   help="TF Serving model base (default: exports; `kflow serve exports`)")
    p.add_argument("--version", type=int, default=None, metavar="N",
                   help="version to publish (default: the next one)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --version")
    p.add_argument("--no-serving", dest="serving", action="store_false",
                   help="skip the SavedModel / model base (TFLite only)")
    p.add_argument("--serving-root", default="/models", metavar="PATH",
                   help="where the server mounts the base, for models.config (default: /models)")
    p.add_argument("--warmup-rows", type=int, default=5, metavar="N",
                   help="TF Serving warmup requests from test rows (default: 5; 0: none)")
    p.add_argument("--no-split-features", dest="split_features", action="store_false",
                   help="keep a vector input as one signature input instead of one per feature")
    p.add_argument("--tflite", default=None, metavar="VARIANTS",
                   help="comma-separated: float32,float16,dynamic,int8, or 'all'")
    p.add_argument("--int8-io", action="store_true",
                   help="int8 variant with int8 inputs and outputs (default: float32 I/O)")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                   help="accuracy gate: points a variant may lose against float32 (default 1)")
    p.add_argument("--max-error-increase", type=float, default=5.0, metavar="PERCENT",
                   help="regression gate: percent of MAE a variant may add (default 5)")
    p.add_argument("--tflite-preprocessing", choices=["model", "sidecar"], default="model",
                   help="sidecar: convert the numeric part; preprocessing goes to "
                        "preprocessing.json (for string lookups the converter cannot take)")
    p.add_argument("--representative-data", default=None, metavar="FILE",
                   help="int8 calibration rows, .npy / .npz (default: the training split)")
    p.add_argument("--representative-samples", type=int, default=200, metavar="N",
                   help="calibration rows drawn (default: 200)")
    p.add_argument("--trust-recipe-file", action="store_true",
                   help="for a run trained by an older kflow (no samples.npz): allow importing "
                   "the recipe .py file its config.yaml names, to re-make the test split. "
                   "Only for run directories whose code you trust")
    p.add_argument("--quiet", action="store_true", help="print only the result")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run, needs_tensorflow=True)


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from kflow.export import export_run
    from kflow.export.report import render_table

    log = None if args.quiet else (lambda msg: print(f"kflow: {msg}", flush=True))
    import dataclasses

    from kflow.export import ExportOptions

    options = ExportOptions(**{f.name: getattr(args, f.name)
                               for f in dataclasses.fields(ExportOptions) if hasattr(args, f.name)})
    result = export_run(
        args.run_dir, name=args.name, base=args.base, version=args.version,
        overwrite=args.overwrite, serving=args.serving, tflite=args.tflite, options=options,
        trust_recipe_file=args.trust_recipe_file, log=log,
    )
    report = result.report
    if result.version_dir is not None:
        sm = report["saved_model"]
        print(f"SavedModel: {result.version_dir} (max abs diff vs Keras "
              f"{sm['max_abs_diff']:.3g}, {sm['warmup_requests']} warmup requests)")
        print(f"models.config: {result.models_config}")
    if (report.get("tflite") or {}).get("variants"):
        print(format_table(render_table(report)))
        print(f"TFLite files: {result.export_dir}")
    from kflow.run import RunDir

    print(f"report: {RunDir(result.run_dir).export_json}")
    for note in result.notes:
        if not args.quiet:
            print(f"kflow: {note}")
    return 0
