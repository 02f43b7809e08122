"""`export_run`: a finished run directory -> SavedModel in a TF Serving base, TFLite files.

Every artifact is checked before anything is published:

1. the SavedModel is reloaded with `tf.saved_model.load` and must give the
   Keras model's outputs (max abs difference <= `parity_tolerance`);
2. each TFLite variant runs in the LiteRT interpreter on the test split and
   must stay within the accuracy gate.

Only then is the version renamed into `BASE/NAME/VERSION`, `models.config`
rewritten and `RUN_DIR/export/` (TFLite files, `metadata.json`, the sidecar,
`export.json`, `export.html`) swapped into place. A failure at any step
removes the staging directories: no partial version, no half-written export.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kflow.errors import ConfigError, RunError
from kflow.export.errors import (
    AccuracyGateError,
    ExportError,
    RepresentativeDataError,
    TFLiteConversionError,
)
from kflow.export.layout import InputLayout, check_single_output, num_rows, take
from kflow.run import RunDir, RunSamples

__all__ = ["export_run", "ExportOptions", "ExportResult", "TFLITE_PREPROCESSING",
           "load_run_data", "tflite_input_names", "default_model_name"]

TFLITE_PREPROCESSING = ("model", "sidecar")
METADATA_FILE = "metadata.json"
_PARITY_ROWS = 256


@dataclass
class ExportResult:
    """What `export_run` published.

    Attributes:
        run_dir: The exported run.
        name: The model's name in the base.
        version: The published version (`None` without a serving export).
        version_dir: `BASE/NAME/VERSION`.
        models_config: `BASE/models.config`.
        export_dir: `RUN_DIR/export` (TFLite files, metadata, `export.json`).
        tflite_files: `{variant: path}`.
        report: The content of `export.json`.
        notes: Sentences worth printing (skipped checks, report placement).
    """

    run_dir: Path
    name: str
    version: int | None = None
    version_dir: Path | None = None
    models_config: Path | None = None
    export_dir: Path | None = None
    tflite_files: dict[str, Path] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def default_model_name(run: Any) -> str:
    """The recipe's name, made usable as a model name (`digits-cnn`, `my_recipe`)."""
    ref = str(run.info.get("recipe") or run.config.get("recipe") or run.run_dir.name)
    if ":" in ref or ref.endswith((".py", ".yaml", ".yml")):
        path, _, cls = ref.rpartition(":") if ":" in ref else (ref, "", "")
        ref = cls or Path(path).stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", ref).strip("-.") or "model"
    return name if name[0].isalnum() else f"m{name}"


def load_run_data(run_dir: Path, trust_recipe_file: bool = False) -> RunSamples:
    """The run's test and training rows: its `samples.npz`, or (a run from an older
    kflow) the splits re-made from config.yaml with the same seed."""
    from kflow.run import read_samples

    samples = read_samples(run_dir)
    if samples.test_x is not None or "no test" in samples.reason:
        return samples
    from kflow.training.trainer import Trainer

    try:
        splits = Trainer.from_run(run_dir, trust_recipe_file=trust_recipe_file,
                                  verbose=0).splits()
    except Exception as exc:  # noqa: BLE001 - any data failure: reported, export goes on
        first = (str(exc).strip().splitlines() or [""])[0]
        return RunSamples(reason=f"{type(exc).__name__}: {first}")
    test = splits.test if splits.test is not None else splits.val
    return RunSamples(
        test_x=None if test is None else test.x, test_y=None if test is None else test.y,
        train_x=splits.train.x, test_rows_total=0 if test is None else len(test),
        reason="" if test is not None else "the run has no test or validation split",
    )


def _load_representative(path: str | Path) -> Any:
    """Rows of model inputs from .npy (one input) or .npz (one array per input name)."""
    path = Path(path)
    if not path.is_file():
        raise RepresentativeDataError(f"Representative data file '{path}' does not exist.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RepresentativeDataError(
            f"Cannot read representative data '{path}' ({exc}); use .npy (one model input) "
            "or .npz (one array per input name).") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    return {k: loaded[k] for k in loaded.files}


def _sample(x: Any, n: int, seed: int = 0) -> Any:
    total = num_rows(x)
    if total <= n:
        return x
    index = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return take(x, index)


def _swap_dir(new: Path, target: Path) -> None:
    """Replaces `target` by `new` (renames; the old one is removed afterwards)."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}-old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        os.rename(target, old)
    os.rename(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _gate(task: str, variants: dict[str, dict[str, Any]], keras_metric: float | None,
          max_accuracy_drop: float, max_error_increase: float) -> str:
    """Fills `passed` / drop figures in place; returns the gate's description."""
    metric = "mae" if task == "regression" else "accuracy"
    reference = "float32" if "float32" in variants else "keras"
    ref_value = variants["float32"][metric] if reference == "float32" else keras_metric
    for name, v in variants.items():
        base = keras_metric if name == "float32" else ref_value
        value = v.get(metric)
        if value is None or base is None:
            v["passed"] = None
            continue
        if metric == "accuracy":
            v["drop_points"] = round(100.0 * (base - value), 4)
            v["passed"] = bool(v["drop_points"] <= max_accuracy_drop + 1e-9)
        else:
            inc = 100.0 * (value - base) / max(abs(base), 1e-12)
            v["increase_percent"] = round(inc, 4)
            v["passed"] = bool(inc <= max_error_increase + 1e-9)
    if metric == "accuracy":
        return (f"accuracy at most {max_accuracy_drop:g} points below {reference} "
                "(float32 against Keras)")
    return f"MAE at most {max_error_increase:g}% above {reference} (float32 against Keras)"


def _gate_failure(task: str, variants: dict[str, dict[str, Any]], max_accuracy_drop: float,
                  max_error_increase: float, hint: str = "") -> AccuracyGateError | None:
    for name, v in variants.items():
        tip = f" {hint}" if hint and name == "int8" else ""
        if v.get("passed") is False:
            ref = "Keras" if name == "float32" or "float32" not in variants else "float32"
            if task == "regression":
                return AccuracyGateError(
                    f"TFLite {name} MAE {v['mae']:.4g} is {v['increase_percent']:.1f}% above "
                    f"{ref}; the gate allows {max_error_increase:g}% (--max-error-increase)."
                    f"{tip} Nothing was exported.")
            return AccuracyGateError(
                f"TFLite {name} accuracy {v['accuracy']:.4f} is {v['drop_points']:.2f} points "
                f"below {ref}; the gate allows {max_accuracy_drop:g} (--max-accuracy-drop)."
                f"{tip} Nothing was exported.")
    return None


@dataclass
class ExportOptions:
    """How a run is exported, past the common choices of `export_run` (declared as data).

    Every field is also a `kflow export` flag of the same name (`--warmup-rows`...).

    Attributes:
        int8_io: int8 inputs and outputs for the int8 variant. Defaults to `False`.
        max_accuracy_drop: The gate: accuracy points a variant may lose
            against float32 (float32 against Keras). Defaults to 1.0.
        max_error_increase: The regression gate: percent of MAE a variant may
            add. Defaults to 5.0.
        tflite_preprocessing: "model" (the preprocessing is converted with the
            model) or "sidecar" (the numeric part is converted; the
            preprocessing goes to `preprocessing.json`). Defaults to "model".
        serving_root: Where the server mounts the base, for `models.config`.
            Defaults to "/models".
        warmup_rows: TF Serving warmup requests to write. Defaults to 5.
        representative_data: int8 calibration rows (an array, a dict of
            arrays, or a .npy/.npz path). Defaults to the run's training rows.
        representative_samples: Calibration rows drawn. Defaults to 200.
        parity_tolerance: Largest SavedModel-vs-Keras difference. Defaults to 1e-5.
        split_features: One signature input per named feature of a single
            vector input. Defaults to `True`.
        latency_samples: One-row invocations timed per variant. Defaults to 100.
    """

    int8_io: bool = False
    max_accuracy_drop: float = 1.0
    max_error_increase: float = 5.0
    tflite_preprocessing: str = "model"
    serving_root: str = "/models"
    warmup_rows: int = 5
    representative_data: Any = None
    representative_samples: int = 200
    parity_tolerance: float = 1e-5
    split_features: bool = True
    latency_samples: int = 100

    @classmethod
    def resolve(cls, options: ExportOptions | None, values: dict[str, Any]) -> ExportOptions:
        """`options` (or the defaults) with `values` replaced; unknown names are an error."""
        from kflow._options import resolve_options

        opts = resolve_options(cls, options, values, "export_run()")
        opts.validate()
        return opts

    def validate(self) -> None:
        if self.tflite_preprocessing not in TFLITE_PREPROCESSING:
            raise ConfigError(
                f"tflite_preprocessing must be one of: {', '.join(TFLITE_PREPROCESSING)}. "
                f"Got {self.tflite_preprocessing!r} instead.")
        if self.max_accuracy_drop < 0 or self.max_error_increase < 0:
            raise ConfigError("--max-accuracy-drop and --max-error-increase must be >= 0.")


@dataclass
class _Plan:
    """Everything an export needs, checked before anything is written."""

    run_dir: Path
    name: str
    task: str
    class_names: list[str] | None
    variants: list[str]
    base: Any  # ModelBase, or None without a serving export
    data: RunSamples
    model: Any
    layout: InputLayout
    rep_x: Any
    parity_x: Any
    rows_source: str
    not_offered: dict[str, str] = field(default_factory=dict)


def export_run(
    run_dir: str | Path,
    *,
    base: str | Path = "exports",
    name: str | None = None,
    version: int | None = None,
    overwrite: bool = False,
    serving: bool = True,
    tflite: str | Iterable[str] | None = None,
    options: ExportOptions | None = None,
    trust_recipe_file: bool = False,
    log: Callable[[str], None] | None = None,
    **option_values: Any,
) -> ExportResult:
    """Exports a finished run: SavedModel into a TF Serving base, and TFLite variants.

    Args:
        run_dir: A finished run directory (with `model.keras`).
        base: The TF Serving model base directory (`kflow serve` serves it too).
            Defaults to "exports".
        name: The model's name in the base. Defaults to the recipe's name.
        version: The version to publish. Defaults to the next free one.
        overwrite: Replace an existing `version`. Defaults to `False`.
        serving: Write the SavedModel version and `models.config`. Defaults to `True`.
        tflite: Variants: "float32,float16,dynamic,int8", "all" or a list.
            Defaults to `None` (no TFLite).
        options: An `ExportOptions` (gates, warmup, calibration...).
        trust_recipe_file: For a run without `samples.npz` (an older kflow),
            allow importing the recipe file its config names to re-make the
            test split. Defaults to `False`.
        log: Called with progress sentences. Defaults to silent.
        **option_values: `ExportOptions` fields, e.g. `warmup_rows=0`.

    Returns:
        An `ExportResult`.

    Raises:
        RunError: The run directory does not exist, is not a run, or has no model.
        VersionExistsError: `version` exists and `overwrite` is off.
        BaseNotWritableError: The base cannot be written.
        RepresentativeDataError: int8 without representative data.
        ParityError, AccuracyGateError, TFLiteConversionError: a check failed.

    Example:

    ```python
    import kflow
    result = kflow.export_run("runs/digits-cnn", base="exports", tflite="float32,int8")
    print(result.version_dir, result.report["tflite"]["variants"]["int8"]["accuracy"])
    ```
    """
    opts = ExportOptions.resolve(options, option_values)
    say = log or (lambda _msg: None)
    plan = _plan(Path(run_dir), base, name, version, overwrite, serving, tflite, opts,
                 trust_recipe_file, say)
    result = _build_and_publish(plan, version, overwrite, opts, say)
    from kflow.export.report import attach_to_run_report

    result.notes.append(attach_to_run_report(plan.run_dir, result.report))
    return result


def _plan(run_dir: Path, base: Any, name: str | None, version: int | None, overwrite: bool,
          serving: bool, tflite: Any, opts: ExportOptions, trust_recipe_file: bool,
          say: Callable[[str], None]) -> _Plan:
    """Checks the request and loads the run (one-line errors before anything is written)."""
    from kflow.export.model_base import ModelBase, require_serving_api
    from kflow.export.tflite import parse_variants
    from kflow.run import load_run

    variants = parse_variants(tflite)
    if not serving and not variants:
        raise ConfigError("Nothing to export: serving is off and no --tflite variant was given.")
    if not run_dir.is_dir():
        raise RunError(f"Run directory '{run_dir}' does not exist.")
    run = load_run(run_dir, load_model=False)  # one-line errors before loading Keras
    task = run.info.get("task")
    if task not in ("multiclass", "binary", "regression"):
        raise RunError(f"Run directory '{run_dir}' has no run.json with the task; "
                       "re-run its training command to complete it.")
    variants, not_offered = _offered_variants(variants, tflite, run.info)
    for variant, why in not_offered.items():
        say(f"TFLite {variant} is not offered for this recipe ({why}); skipped")
    if not serving and not variants:
        raise ConfigError("Nothing to export: serving is off and no --tflite variant the "
                          "recipe offers was given.")
    name = name or default_model_name(run)
    mb = None
    if serving:
        require_serving_api()
        mb = ModelBase(base, opts.serving_root)
        mb.check_name(name)
        mb.check_writable(name)
        if version is not None:
            mb.check_version(name, version, overwrite)

    data = load_run_data(run_dir, trust_recipe_file)
    if data.reason:
        say(f"the run's data could not be loaded ({data.reason}); parity is checked on "
            "made-up rows and TFLite accuracy is not measured.")
    rep_x = None
    if "int8" in variants:
        rep_x = data.train_x
        if opts.representative_data is not None:
            rep_x = (_load_representative(opts.representative_data)
                     if isinstance(opts.representative_data, (str, Path))
                     else opts.representative_data)
        if rep_x is None:
            raise RepresentativeDataError(
                "int8 quantization needs representative data, and the run's training split "
                f"could not be loaded ({data.reason}). Pass --representative-data FILE "
                "(.npy / .npz of model inputs) or leave int8 out of --tflite.")
        if num_rows(rep_x) == 0:
            raise RepresentativeDataError("int8 quantization needs representative data; the "
                                          "representative sample is empty.")
    model = load_run(run_dir).model
    check_single_output(model)
    layout = InputLayout.from_model(model, run.info.get("feature_names"), opts.split_features,
                                    columns=run.info.get("columns"))
    if data.test_x is not None:
        parity_x, rows_source = take(data.test_x, slice(0, _PARITY_ROWS)), "test split"
    else:
        parity_x, rows_source = layout.synthetic(16), "made-up rows (data not loadable)"
    return _Plan(run_dir=run_dir, name=name, task=task,
                 class_names=run.info.get("class_names") or None, variants=variants, base=mb,
                 data=data, model=model, layout=layout, rep_x=rep_x, parity_x=parity_x,
                 rows_source=rows_source, not_offered=not_offered)


def _offered_variants(variants: list[str], spec: Any, info: dict[str, Any]
                      ) -> tuple[list[str], dict[str, str]]:
    """Drops the variants the run's recipe does not offer (`Recipe.tflite_not_offered`).

    With `all` they are skipped (and said why); asked for by name, they are an
    error that says why and lists what the recipe offers.
    """
    declined = {k: str(v) for k, v in (info.get("tflite_not_offered") or {}).items()}
    skipped = {v: declined[v] for v in variants if v in declined}
    if not skipped:
        return variants, {}
    items = [spec] if isinstance(spec, str) else list(spec or [])
    asked_all = any(s.strip() == "all" for item in items for s in str(item).split(","))
    offered = [v for v in variants if v not in declined]
    if not asked_all:
        from kflow.export.tflite import TFLITE_VARIANTS

        variant, why = next(iter(skipped.items()))
        allowed = [v for v in TFLITE_VARIANTS if v not in declined]
        raise ConfigError(
            f"TFLite {variant} is not offered for {info.get('recipe', 'this recipe')}: {why}. "
            f"Offered: {', '.join(allowed)}. Nothing was exported.")
    return offered, skipped


def _build_and_publish(plan: _Plan, version: int | None, overwrite: bool,
                       opts: ExportOptions, say: Callable[[str], None]) -> ExportResult:
    """Writes every artifact into staging folders, checks them, then renames them in."""
    from kflow import __version__

    p, mb = plan, plan.base
    report: dict[str, Any] = {
        "run_dir": str(p.run_dir), "name": p.name, "task": p.task,
        "class_names": p.class_names, "kflow_version": __version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "signature": {"key": "serving_default", "inputs": p.layout.describe(),
                      "outputs": _outputs_description(p.task, p.class_names),
                      "column_names": p.layout.column_names()},
        "example_signature": _example_signature(p.model, p.task),
    }
    result = ExportResult(run_dir=p.run_dir, name=p.name, report=report)
    staging_export = p.run_dir / f".export-staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging_version = None
    fresh_model_dir = mb is not None and not mb.model_dir(p.name).exists()
    published = False
    try:
        with mb.lock(p.name) if mb is not None else contextlib.nullcontext():
            if mb is not None:
                mb.clean_stale(p.name)
                version = version if version is not None else mb.next_version(p.name)
                mb.check_version(p.name, version, overwrite)
                staging_version = mb.staging_dir(p.name, version)
                say(f"writing the SavedModel for {p.name} version {version}")
                report["saved_model"] = _saved_model(
                    p.model, p.layout, p.task, p.class_names, staging_version, p.parity_x,
                    opts.parity_tolerance, p.name, opts.warmup_rows, p.data, p.rows_source, say)
            try:
                staging_export.mkdir(parents=True)
            except OSError as exc:
                raise ExportError(
                    f"Run directory '{p.run_dir}' is not writable ({exc.strerror}); the export "
                    "report and TFLite files go into RUN_DIR/export. Nothing was exported."
                ) from None
            if p.variants:
                report["tflite"] = _tflite(
                    p.model, p.layout, p.task, p.class_names, p.variants, staging_export,
                    p.data, p.rep_x, opts.int8_io, opts.tflite_preprocessing,
                    opts.max_accuracy_drop, opts.max_error_increase,
                    opts.representative_samples, opts.latency_samples, say)
                if p.not_offered:
                    report["tflite"]["not_offered"] = dict(p.not_offered)
                failure = _gate_failure(p.task, report["tflite"]["variants"],
                                        opts.max_accuracy_drop, opts.max_error_increase,
                                        _int8_hint(p.model, report["tflite"]))
                if failure is not None:
                    raise failure
            # Everything checked: publish.
            export_dir = RunDir(p.run_dir).export
            if mb is not None:
                result.version_dir = mb.model_dir(p.name) / str(version)
                result.version, result.models_config = version, mb.path / "models.config"
                report["saved_model"]["version_dir"] = str(result.version_dir)
                report.update({"base": str(mb.path), "version": version,
                               "version_dir": str(result.version_dir),
                               "models_config": str(result.models_config)})
            _write_reports(staging_export, report)
            if mb is not None:
                mb.publish(staging_version, p.name, version, overwrite)
                staging_version = None
                mb.write_models_config()
                say(f"published {result.version_dir} and updated {result.models_config}")
            _swap_dir(staging_export, export_dir)
            result.export_dir = export_dir
            result.tflite_files = {
                v: export_dir / info["file"]
                for v, info in (report.get("tflite") or {}).get("variants", {}).items()}
            published = True
    finally:
        if staging_version is not None:
            shutil.rmtree(staging_version, ignore_errors=True)
        if staging_export.exists():
            shutil.rmtree(staging_export, ignore_errors=True)
        if not published and fresh_model_dir:
            mb.remove_if_empty(p.name)
    return result


def _int8_hint(model: Any, tflite_report: dict[str, Any]) -> str:
    """Why int8 may fail with the preprocessing inside the model, and what to do."""
    from kflow.export.sidecar import preprocessing_layer_names

    if tflite_report.get("preprocessing") != "model" or not preprocessing_layer_names(model):
        return ""
    return ("int8 quantizes each input tensor with one scale, so raw features of very "
            "different ranges lose precision before the model's own scaling; re-run with "
            "--tflite-preprocessing sidecar to quantize the scaled inputs instead.")


def _example_signature(model: Any, task: str) -> dict[str, Any] | None:
    """The `classification` / `regression` signature written next to serving_default."""
    from kflow.export.saved_model import _METHODS, example_signature_key

    key = example_signature_key(task, int(model.outputs[0].shape[-1] or 1))
    if key is None:
        return None
    outputs = ["outputs"] if task == "regression" else ["classes", "scores"]
    return {"key": key, "method_name": _METHODS[key], "inputs": ["inputs"],
            "outputs": outputs}


def _outputs_description(task: str, class_names: list[str] | None) -> dict[str, Any]:
    from kflow.export.saved_model import serving_outputs

    shapes = {"probabilities": ("float32", [None, 2 if task == "binary" else
                                            len(class_names or []) or None]),
              "class_id": ("int64", [None]), "class_name": ("string", [None]),
              "value": ("float32", [None])}
    return {n: {"dtype": shapes[n][0], "shape": shapes[n][1]}
            for n in serving_outputs(task, class_names)}


def _saved_model(model, layout, task, class_names, staging, parity_x, tolerance, name,
                 warmup_rows, data, rows_source, say) -> dict[str, Any]:
    from kflow.export.saved_model import check_saved_model, write_saved_model
    from kflow.export.warmup import write_warmup_requests

    write_saved_model(model, layout, task, class_names, staging)
    parity = check_saved_model(staging, model, layout, task, class_names, parity_x, tolerance)
    say(f"SavedModel reloaded with tf.saved_model.load: max abs difference vs Keras "
        f"{parity['max_abs_diff']:.3g} on {parity['rows']} rows ({rows_source})")
    warm_x = take(data.test_x, slice(0, warmup_rows)) if data.test_x is not None else parity_x
    n = write_warmup_requests(staging, name, layout.signature_feed(warm_x), warmup_rows)
    return {**parity, "rows_source": rows_source, "warmup_requests": n}


def _tflite(model, layout, task, class_names, variants, out_dir, data, rep_x, int8_io,
            preprocessing, max_accuracy_drop, max_error_increase, rep_samples,
            latency_samples, say) -> dict[str, Any]:
    import tempfile

    from kflow.export.saved_model import head_outputs, keras_predict, main_output, max_abs_diff
    from kflow.export.sidecar import (
        SIDECAR_FILE,
        apply_sidecar,
        numeric_model,
        plan_sidecar,
        preprocessing_layer_names,
        sidecar_spec,
    )
    from kflow.export.tflite import (
        TFLiteRunner,
        convert,
        finalize_tflite,
        head_output_name,
        measure_latency,
        score,
        write_conversion_saved_model,
    )

    output = head_output_name(task)
    spec = None
    if preprocessing == "sidecar":
        plan = plan_sidecar(model)
        if plan.steps:
            part = numeric_model(model, plan)
            spec = sidecar_spec(model, plan)
            say(f"moved {len(plan.steps)} preprocessing layers into {SIDECAR_FILE}: "
                f"{', '.join(plan.moved)}")
        else:
            say("no preprocessing layers to move into a sidecar; converting the whole model")
    if spec is not None:
        specs, convert_fn = _numeric_part_signature(part, task)
    else:
        part = model
        specs = layout.signature_specs()
        to_head = _fold_normalization(model, layout) or (
            lambda inputs: model(layout.to_model_tf(inputs), training=False))

        def convert_fn(inputs):
            return head_outputs(to_head(inputs), task)

    def feed_of(x: Any) -> dict[str, np.ndarray]:
        if spec is not None:
            return apply_sidecar(spec, layout.model_arrays(x))
        return layout.signature_feed(x)

    result: dict[str, Any] = {"preprocessing": "sidecar" if spec else "model",
                              "output": output, "int8_io": bool(int8_io and "int8" in variants),
                              "metric": "mae" if task == "regression" else "accuracy"}
    keras_metric = None
    test_feed = None
    if data.test_x is not None:
        keras_head = keras_predict(model, layout, data.test_x)
        keras_metric = score(task, data.test_y, keras_head)
        test_feed = feed_of(data.test_x)
        result["test_rows"] = int(len(data.test_y))
    rep_feed = feed_of(_sample(rep_x, rep_samples)) if rep_x is not None else None

    def representative():
        n = len(next(iter(rep_feed.values())))
        for i in range(n):
            yield {k: v[i:i + 1] for k, v in rep_feed.items()}

    metric = result["metric"]
    files: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kflow-tflite-") as tmp:
        sm_dir = Path(tmp) / "numeric_saved_model"
        write_conversion_saved_model(part, convert_fn, specs, sm_dir)
        embedded = _metadata(layout, task, class_names, output, {}, spec, int8_io, model,
                             specs)
        for variant in variants:
            try:
                blob = convert(sm_dir, variant, representative if variant == "int8" else None,
                               int8_io)
            except TFLiteConversionError as exc:
                layers = preprocessing_layer_names(model) if spec is None else []
                if layers and "TensorList" not in str(exc):
                    raise TFLiteConversionError(
                        f"{exc} The model's preprocessing ({', '.join(layers)}) is the likely "
                        "cause; re-run with --tflite-preprocessing sidecar to convert the "
                        f"numeric part and ship the preprocessing in {SIDECAR_FILE}. "
                        "Nothing was exported.") from None
                raise
            blob = finalize_tflite(blob, {**embedded, "variant": variant,
                                          "int8_io": bool(int8_io and variant == "int8")})
            path = out_dir / f"model_{variant}.tflite"
            path.write_bytes(blob)
            info: dict[str, Any] = {"file": path.name, "size_bytes": len(blob)}
            runner = TFLiteRunner(blob)
            if test_feed is not None:
                head = runner.predict(test_feed, output)
                info[metric] = score(task, data.test_y, head)
                info["max_abs_diff_vs_keras"] = max_abs_diff(
                    main_output(task, head), main_output(task, keras_head))
            lat_feed = test_feed if test_feed is not None else feed_of(layout.synthetic(8))
            times = measure_latency(TFLiteRunner(blob), lat_feed, latency_samples)
            info["mean_latency_ms"] = 1000.0 * float(np.mean(times)) if times else None
            info["latency_samples"] = len(times)
            files[variant] = info
            say(f"TFLite {variant}: {len(blob) / 1024:.1f} KiB, "
                + (f"{metric} {info[metric]:.4f}, " if metric in info else "")
                + f"{info['mean_latency_ms']:.3f} ms per example")
    if "float32" in files:
        for info in files.values():
            info["size_ratio_vs_float32"] = info["size_bytes"] / files["float32"]["size_bytes"]
    result["gate"] = _gate(task, files, keras_metric, max_accuracy_drop, max_error_increase)
    result["reference"] = "float32" if "float32" in files else "keras"
    result["variants"] = files
    if keras_metric is None:
        result["gate"] += f" (skipped: no test data: {data.reason})"
    if spec is not None:
        (out_dir / SIDECAR_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    metadata = _metadata(layout, task, class_names, output, files, spec, int8_io, model, specs)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    result["metadata"] = METADATA_FILE
    result["keras"] = {metric: keras_metric}
    return result


def tflite_input_names(layout: InputLayout) -> list[str]:
    """The TFLite model's input names (without a sidecar): the model's, sanitized."""
    from kflow.export.layout import signature_name

    taken: set[str] = set()
    return [signature_name(m.name, taken) for m in layout.model_inputs]


def _numeric_part_signature(part: Any, task: str) -> tuple[dict[str, Any], Any]:
    """Input specs and conversion function of a sidecar export's numeric part."""
    import tensorflow as tf

    from kflow.export.saved_model import head_outputs

    struct = part.input
    if isinstance(struct, dict):
        keys, tensors = list(struct), list(struct.values())
    elif isinstance(struct, (list, tuple)):
        keys, tensors = [t.name for t in struct], list(struct)
    else:
        keys, tensors = [struct.name], [struct]
    specs = {k: tf.TensorSpec([None, *t.shape[1:]], tf.as_dtype(str(t.dtype)), name=k)
             for k, t in zip(keys, tensors, strict=True)}

    def fn(inputs):
        x = ({k: inputs[k] for k in keys} if isinstance(struct, (dict, list, tuple))
             else inputs[keys[0]])
        return head_outputs(part(x, training=False), task)

    return specs, fn


def _fold_normalization(model: Any, layout: InputLayout) -> Callable[[dict], Any] | None:
    """For named features stacked into one vector that a `Normalization` layer scales
    first (breast-cancer-mlp): scale each feature on its own input, then stack.

    The same arithmetic; but each int8 tensor has one scale, and raw features of
    very different ranges (0.05 and 2500) stacked into one tensor would share
    it. Scaled first, every feature is quantized on its own range.
    """
    import tensorflow as tf

    from kflow.export.sidecar import numeric_model, plan_sidecar

    if not layout.split or len(layout.model_inputs) != 1:
        return None
    try:
        plan = plan_sidecar(model)
    except Exception:  # noqa: BLE001 - no foldable plan: convert the model as it is
        return None
    if (len(plan.steps) != 1 or plan.steps[0]["op"] != "normalize"
            or len(plan.frontier) != 1):
        return None
    step = plan.steps[0]
    width = layout.model_inputs[0].shape[-1]
    mean = np.broadcast_to(np.ravel(np.asarray(step["mean"], "float32")), (width,))
    std = np.maximum(np.sqrt(np.broadcast_to(
        np.ravel(np.asarray(step["variance"], "float32")), (width,))),
        np.float32(step["epsilon"]))
    part = numeric_model(model, plan)
    key = next(iter(plan.frontier))
    columns = sorted((s for s in layout.signature_inputs if s.column is not None),
                     key=lambda s: s.column)
    struct = part.input

    def to_head(inputs):
        x = tf.stack([(tf.cast(inputs[s.name], tf.float32) - mean[s.column]) / std[s.column]
                      for s in columns], axis=-1)
        return part({key: x} if isinstance(struct, dict) else x, training=False)

    return to_head


def _metadata(layout, task, class_names, output, files, spec, int8_io, model=None,
              specs=None) -> dict[str, Any]:
    """`metadata.json` (also embedded in every .tflite file): what an app needs.

    Inputs in the file's order with the user's column names, dtypes and shapes,
    the outputs, class names, the normalization the model applies, and the
    missing-value convention.
    """
    from kflow.export.saved_model import BINARY_THRESHOLD
    from kflow.export.sidecar import SIDECAR_FILE

    columns = {s.source: s.feature for s in layout.signature_inputs
               if s.column is None and s.feature}
    inputs = []
    if spec is None:  # the TFLite file takes the SavedModel's named inputs
        for s in layout.signature_inputs:
            entry = {"name": s.name, "tflite_name": s.name, "dtype": s.dtype,
                     "shape": [None, *s.shape]}
            if s.feature and s.feature != s.name:
                entry["column"] = s.feature
            if s.parse:
                entry["parse"] = s.parse
            inputs.append(entry)
    else:  # raw model inputs; the runner applies preprocessing.json
        kinds = {s.source: s.parse for s in layout.signature_inputs}
        for mi in layout.model_inputs:
            entry = {"name": mi.name, "tflite_name": None, "dtype": mi.dtype,
                     "shape": [None, *mi.shape]}
            if columns.get(mi.name) and columns[mi.name] != mi.name:
                entry["column"] = columns[mi.name]
            if kinds.get(mi.name):
                entry["parse"] = kinds[mi.name]
            inputs.append(entry)
    normalization = []
    if model is not None:
        from kflow.export.sidecar import plan_sidecar

        try:
            steps = spec["steps"] if spec is not None else plan_sidecar(model).steps
        except Exception:  # noqa: BLE001 - informational only
            steps = []
        for st in steps:
            if st.get("op") == "normalize":
                normalization.append({
                    "inputs": st["inputs"], "mean": np.ravel(st["mean"]).tolist(),
                    "std": np.maximum(np.sqrt(np.ravel(st["variance"])),
                                      st["epsilon"]).tolist(),
                    "applied": "in preprocessing.json" if spec is not None else
                    "inside the model"})
    outputs = {}
    for name, sp in (_outputs_description(task, class_names) or {}).items():
        if name != "class_name":
            outputs[name] = sp
    return {
        "format": "kflow-tflite", "version": 2, "task": task,
        "class_names": class_names, "output": output, "outputs": outputs,
        "binary_threshold": BINARY_THRESHOLD if task == "binary" else None,
        "inputs": inputs,
        "input_order": [i["name"] for i in inputs],
        "normalization": normalization,
        "missing_values": ("NaN for a missing number, \"\" for a missing category or "
                           "yes/no value, -1 for a missing category id; the model fills "
                           "them in with the training split's statistics"),
        "preprocessing": SIDECAR_FILE if spec is not None else None,
        "variants": {v: info["file"] for v, info in files.items()},
        "int8_io": bool(int8_io),
    }


def _write_reports(export_dir: Path, report: dict[str, Any]) -> None:
    """Writes the export's report files into the staging copy of `RUN_DIR/export/`."""
    from kflow.export.report import render_page, render_section
    from kflow.run import atomic_write_text, json_default

    names = RunDir(".")
    atomic_write_text(export_dir / names.export_json.name,
                      json.dumps(report, indent=2, default=json_default) + "\n")
    atomic_write_text(export_dir / names.export_html.name, render_page(report))
    atomic_write_text(export_dir / names.export_section.name, render_section(report))
