"""The four TFLite variants of a trained run side by side: size, accuracy, latency.

Exports the run with `kflow.export_run(..., tflite="all")` (into a temporary
copy of the run directory, so the run's own `export/` is untouched), which
converts float32, float16, dynamic-range and full-integer int8 models and
measures their accuracy on the run's test split in the LiteRT interpreter.
Then the variants are timed against each other: one-row invocations
(device-like latency: mean, p50, p99) and 64-row batches (throughput), in
interleaved rounds with a rotating order so that noise from other work on the
machine hits every variant alike; the median over rounds is reported.

Without `--run-dir` it first trains digits-cnn with its default recipe
(about a minute on two cores), since quantization figures of an undertrained
model mean little.

Usage:

    python benchmarks/bench_tflite.py
    python benchmarks/bench_tflite.py --run-dir runs/digits-cnn-1a2b3c4d --runs 500
    python benchmarks/bench_tflite.py --run-dir RUN --int8-io --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=r".*compile\(\)` was not called")


def _copy_run(run_dir: Path, into: Path) -> Path:
    target = into / run_dir.name
    target.mkdir(parents=True)
    for name in ("model.keras", "run.json", "config.yaml", "metrics.json", "status.json",
                 "history.csv"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
    return target


def _time_rows(runner, rows, n: int) -> list[float]:
    times = []
    for i in range(n):
        row = rows[i % len(rows)]
        start = time.perf_counter()
        runner(row)
        times.append(time.perf_counter() - start)
    return times


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=None, help="a trained run (default: train digits-cnn)")
    p.add_argument("--recipe", default="digits-cnn", help="recipe to train without --run-dir")
    p.add_argument("--variants", default="all", help="comma-separated, or all")
    p.add_argument("--runs", type=int, default=300, help="one-row invocations per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--int8-io", action="store_true", help="int8 inputs/outputs for int8")
    p.add_argument("--tflite-preprocessing", choices=["model", "sidecar"], default="model")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)

    import kflow
    from kflow.export import TFLiteRunner, export_run
    from kflow.export.exporter import load_run_data, tflite_input_names
    from kflow.export.layout import InputLayout
    from kflow.export.sidecar import apply_sidecar

    work = Path(tempfile.mkdtemp(prefix="kflow-bench-tflite-"))
    try:
        if args.run_dir:
            source = Path(args.run_dir)
        else:
            print(f"training {args.recipe} (default recipe) ...", flush=True)
            start = time.perf_counter()
            source = kflow.train(args.recipe, run_dir=work / "trained", verbose=0).run_dir
            print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
        run_dir = _copy_run(source, work / "copy")
        start = time.perf_counter()
        result = export_run(run_dir, serving=False, tflite=args.variants, int8_io=args.int8_io,
                            tflite_preprocessing=args.tflite_preprocessing,
                            latency_samples=20, max_accuracy_drop=100.0,
                            max_error_increase=1e6)
        export_s = time.perf_counter() - start
        tfl = result.report["tflite"]
        metric = tfl["metric"]

        # The test rows in the TFLite models' input format.
        data = load_run_data(run_dir)
        run = kflow.load_run(run_dir)
        layout = InputLayout.from_model(run.model, run.info.get("feature_names"))
        arrays = layout.model_arrays(data.test_x)
        if tfl["preprocessing"] == "sidecar":
            spec = json.loads((result.export_dir / "preprocessing.json").read_text())
            feed = apply_sidecar(spec, arrays)
        else:
            feed = {t: arrays[m.name] for t, m in zip(tflite_input_names(layout),
                                                      layout.model_inputs, strict=True)}
        n = len(next(iter(feed.values())))
        rows = [{k: v[i:i + 1] for k, v in feed.items()} for i in range(n)]
        batches = [{k: v[i:i + 64] for k, v in feed.items()} for i in range(0, n - 63, 64)]

        runners = {v: TFLiteRunner(path, num_threads=args.threads)
                   for v, path in result.tflite_files.items()}
        batch_runners = {v: TFLiteRunner(path, num_threads=args.threads)
                         for v, path in result.tflite_files.items()}
        for v in runners:  # warm up both shapes
            _time_rows(runners[v], rows, 20)
            if batches:
                _time_rows(batch_runners[v], batches, 3)
        one_row: dict[str, list[list[float]]] = {v: [] for v in runners}
        batch_rps: dict[str, list[float]] = {v: [] for v in runners}
        order = list(runners)
        for r in range(args.rounds):
            for v in order[r % len(order):] + order[:r % len(order)]:
                one_row[v].append(_time_rows(runners[v], rows, args.runs))
                if batches:
                    t = _time_rows(batch_runners[v], batches, max(3, args.runs // 64))
                    batch_rps[v].append(64 / statistics.mean(t))

        table = []
        ref = tfl["variants"].get("float32", {})
        for v, info in tfl["variants"].items():
            means = [1000 * statistics.mean(t) for t in one_row[v]]
            p50s = [1000 * _percentile(t, 50) for t in one_row[v]]
            p99s = [1000 * _percentile(t, 99) for t in one_row[v]]
            table.append({
                "variant": v, "size_bytes": info["size_bytes"],
                "size_vs_float32": info["size_bytes"] / ref["size_bytes"] if ref else None,
                metric: info.get(metric),
                "delta_vs_float32": (None if not ref or info.get(metric) is None
                                     else info[metric] - ref[metric]),
                "mean_ms": statistics.median(means), "p50_ms": statistics.median(p50s),
                "p99_ms": statistics.median(p99s),
                "batch64_rows_per_s": statistics.median(batch_rps[v]) if batch_rps[v] else None,
                "gate_passed_at_default": (info.get("drop_points", 0) <= 1.0
                                           if metric == "accuracy" else None),
            })
        keras_value = tfl["keras"][metric]
        header = (f"\n{result.report['name']}: {n} test rows, LiteRT, {args.threads} thread(s), "
                  f"{args.rounds} rounds x {args.runs} one-row calls (median of rounds); "
                  f"{platform.processor() or platform.machine()}, Python "
                  f"{platform.python_version()}; export took {export_s:.0f} s")
        print(header)
        pct = metric == "accuracy"
        print(f"Keras model {metric}: " + (f"{100 * keras_value:.2f}%" if pct
                                           else f"{keras_value:.4g}"))
        cols = ["variant", "size", "vs f32", metric, "vs f32", "mean ms", "p50 ms", "p99 ms",
                "rows/s @64"]
        lines = [cols]
        for row in table:
            delta = row["delta_vs_float32"]
            lines.append([
                row["variant"], f"{row['size_bytes'] / 1024:.1f} KiB",
                f"{100 * row['size_vs_float32']:.1f}%" if row["size_vs_float32"] else "",
                (f"{100 * row[metric]:.2f}%" if pct else f"{row[metric]:.4g}")
                if row[metric] is not None else "n/a",
                "" if delta is None else (f"{100 * delta:+.2f} pts" if pct
                                          else f"{delta:+.4g}"),
                f"{row['mean_ms']:.4f}", f"{row['p50_ms']:.4f}", f"{row['p99_ms']:.4f}",
                f"{row['batch64_rows_per_s']:.0f}" if row["batch64_rows_per_s"] else "",
            ])
        widths = [max(len(r[i]) for r in lines) for i in range(len(cols))]
        for i, r in enumerate(lines):
            print("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                            for j, (c, w) in enumerate(zip(r, widths, strict=True))))
            if i == 0:
                print("  ".join("-" * w for w in widths))
        if args.json:
            Path(args.json).write_text(json.dumps({
                "run_dir": str(source), "test_rows": n, "threads": args.threads,
                "keras": {metric: keras_value}, "variants": table}, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
