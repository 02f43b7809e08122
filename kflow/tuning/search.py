"""`kflow.tune`: hyperparameter search over a recipe's declared space."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.errors import ConfigError, RunError, did_you_mean
from kflow.recipe.base import Recipe
from kflow.run import RunDir, TuneDir
from kflow.tuning.objective import Objective, resolve_objective
from kflow.tuning.report import TrialRow, write_best_yaml, write_report, write_trials_csv
from kflow.tuning.space import SearchSpace
from kflow.tuning.trial import COMPLETED, TrialOutcome, TrialRunner, read_outcome

__all__ = ["tune", "TuneResult", "TuneOptions", "hyperband_schedule", "TUNERS",
           "DEFAULT_MAX_TRIALS"]

TUNERS = ("random", "grid", "bayesian", "hyperband")
DEFAULT_MAX_TRIALS = 10
_META_KEYS = ("recipe", "kflow_version", "recipe_source", "search")


@dataclass
class TuneResult:
    """The result of `kflow.tune`.

    Attributes:
        tune_dir: The tuning directory (`trials.csv`, `report.html`, `best.yaml`,
            `trials/<id>/` run directories, `keras_tuner/` state).
        objective: What the trials were scored by.
        trials: Every trial, in the order they started.
        best: The best completed trial (`None` if none completed, or on a worker).
        best_config: The best configuration (the content of `best.yaml`).
        retrained: The best configuration retrained on train + validation
            (`retrain=True`), else `None`.
    """

    tune_dir: Path
    objective: Objective
    trials: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_config: dict[str, Any] | None = None
    retrained: Any = None

    @property
    def best_yaml(self) -> Path:
        return TuneDir(self.tune_dir).best_yaml

    @property
    def report(self) -> Path:
        return TuneDir(self.tune_dir).report

    @property
    def trials_csv(self) -> Path:
        return TuneDir(self.tune_dir).trials_csv

    @property
    def best_score(self) -> float | None:
        return self.best.score if self.best else None

    def __repr__(self) -> str:
        best = (f"{self.objective.name}={self.best.score:.4f} (trial {self.best.trial_id})"
                if self.best else "none")
        return f"TuneResult('{self.tune_dir}', trials={len(self.trials)}, best={best})"


def hyperband_schedule(max_epochs: int, factor: int = 3,
                       iterations: int = 1) -> list[tuple[int, int, int, int]]:
    """KerasTuner's Hyperband plan: `(bracket, round, trials, epochs per trial)` rows."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    plan = []
    for _ in range(iterations):
        for b in reversed(range(brackets)):
            for r in range(b + 1):
                size = math.ceil(end_size / (b + 1) * factor ** (b - r))
                plan.append((b, r, size, math.ceil(max_epochs / factor ** (b - r))))
    return plan


def _pinned_names(spec: Any, cls: type[Recipe], overrides: Mapping[str, Any] | None,
                  set_args: Iterable[str]) -> tuple[set[str], dict[str, Any]]:
    """Hyperparameters given a value (YAML, overrides, --set), and the YAML search block."""
    from kflow.recipe.overrides import ENGINE_KEYS, flatten_overrides, load_yaml, parse_set_args
    from kflow.tuning.space import _canonical

    pinned: set[str] = set()
    search: dict[str, Any] = {}
    if isinstance(spec, Recipe):
        pinned |= {k for k, v in spec.hparams.items() if v != cls.default_of(k)}
    elif isinstance(spec, str) and spec.endswith((".yaml", ".yml")):
        data = load_yaml(spec)
        rest = {k: v for k, v in data.items() if k not in ENGINE_KEYS and k not in _META_KEYS}
        pinned |= set(flatten_overrides(cls, rest))
        block = data.get("search") or {}
        if not isinstance(block, Mapping):
            raise ConfigError(
                f"The 'search:' block of '{spec}' must be a mapping of hyperparameter: range "
                f"(e.g. dropout: 0.0:0.5). Got a {type(block).__name__} instead."
            )
        search = dict(block)
    if overrides:
        pinned |= set(flatten_overrides(cls, overrides))
    pinned |= {_canonical(cls, k, "--set") for k in parse_set_args(set_args)}
    return pinned, search


def _settings_hash(settings: Mapping[str, Any]) -> str:
    from kflow.run import config_hash

    return config_hash(dict(settings))


def _check_settings(tune_dir: Path, settings: dict[str, Any], overwrite: bool,
                    worker: bool) -> bool:
    """Writes or compares `tune_config.json`; returns whether a search is resumed."""
    from kflow.run import atomic_write_text

    path = TuneDir(tune_dir).settings
    if path.is_file() and overwrite and not worker:
        shutil.rmtree(tune_dir)
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != json.loads(json.dumps(settings, default=str)):
            changed = sorted(k for k in set(previous) | set(settings)
                             if previous.get(k) != json.loads(json.dumps(settings.get(k),
                                                                         default=str)))
            raise ConfigError(
                f"The tuning directory '{tune_dir}' holds a search with other settings "
                f"(changed: {', '.join(changed)}). Choose another --tune-dir, or pass "
                "--overwrite to start over."
            )
        return True
    tune_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2, default=str) + "\n")
    return False


def _fmt_values(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in values.items())


@dataclass
class TuneOptions:
    """How a search runs, past the common choices of `tune` (declared as data).

    Every field is also a `kflow tune` flag (`--factor`, `--max-failures`...).

    Attributes:
        factor: Hyperband's reduction factor. Defaults to 3.
        hyperband_iterations: Hyperband's iterations. Defaults to 1.
        max_consecutive_failed_trials: Stop after this many failures in a row.
            Defaults to 5.
        tunes_root: Parent of default tuning directories. Defaults to "runs".
        command: The command line shown in the report and `best.yaml`.
            Defaults to `None` (a `kflow tune` line made from the arguments).
    """

    factor: int = 3
    hyperband_iterations: int = 1
    max_consecutive_failed_trials: int = 5
    tunes_root: str | Path = "runs"
    command: str | None = None

    @classmethod
    def resolve(cls, options: TuneOptions | None, values: dict[str, Any]) -> TuneOptions:
        """`options` (or the defaults) with `values` replaced; unknown names are an error."""
        from kflow._options import resolve_options

        return resolve_options(cls, options, values, "tune()")


def tune(
    recipe: str | type[Recipe] | Recipe,
    *,
    tuner: str = "random",
    max_trials: int | None = None,
    max_epochs: int | None = None,
    objective: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    set_args: Iterable[str] = (),
    search: Mapping[str, Any] | None = None,
    search_args: Iterable[str] = (),
    search_only: bool = False,
    cv: int | None = None,
    tune_dir: str | Path | None = None,
    seed: int | None = None,
    retrain: bool = False,
    overwrite: bool = False,
    verbose: int | str = "auto",
    options: TuneOptions | None = None,
    **option_values: Any,
) -> TuneResult:
    """Searches a recipe's hyperparameters with KerasTuner; trials train with kflow.

    The space is the recipe's declared `search=` ranges, changed by `search`
    (and a YAML config's `search:` block) and `search_args` (`--search`);
    see `kflow.tuning.space`. Every trial is a `kflow.train` run in
    `tune_dir/trials/<trial_id>/` with the same seed (so the same split),
    early stopping on. Re-running the same call continues an interrupted
    search without repeating finished trials. Failed trials (an exception, a
    NaN loss) are recorded with the reason and the search goes on.

    Args:
        recipe: A registered name, `file.py[:Class]`, a YAML config, a Recipe
            class or instance.
        tuner: "random", "grid", "bayesian" or "hyperband". Defaults to "random".
        max_trials: Trials to run (a cap for Hyperband). Defaults to 10
            (Hyperband: its own schedule).
        max_epochs: Epochs per trial (Hyperband: the most any trial gets).
            Defaults to the recipe's `epochs`.
        objective: A logged metric (`val_accuracy`, `val_loss`, `val_auc`...;
            `name:max` sets the direction). Defaults to `val_accuracy` when
            logged, else `val_loss`.
        overrides: Fixed hyperparameter values (they leave the search space).
        set_args: `KEY=VALUE` strings (as from `--set`), fixed the same way.
        search: `{name: spec}` changes to the space (as a YAML `search:` block).
        search_args: `NAME=SPEC` strings (as from `--search`), applied last.
        search_only: Search only the hyperparameters named in `search` /
            `search_args`. Defaults to `False`.
        cv: Score each trial by the mean of a `cv`-fold cross-validation of
            train + validation. Defaults to `None` (the validation split).
        tune_dir: The tuning directory; default
            `<options.tunes_root>/tune-<recipe>-<tuner>-<settings hash>`.
        seed: Seed of splits, training and the oracle. Defaults to 0 (or the
            YAML's seed).
        retrain: Retrain the best configuration on train + validation for its
            best epoch count, into `tune_dir/best_retrained/`.
        overwrite: Delete a previous search in `tune_dir` first.
        verbose: 0 silent, else one line per trial. Defaults to "auto" (1).
        options: A `TuneOptions` (Hyperband's factor and iterations, the
            failure limit, the default tuning directories' parent, the
            command recorded). Defaults to `TuneOptions()`.
        **option_values: `TuneOptions` fields by name (`factor=2`), over
            `options`.

    Returns:
        A `TuneResult` (on a distributed worker: only its own trials).

    Raises:
        ConfigError: a bad search space, objective, tuner or budget (before
            any trial runs).

    Example:

    ```python
    import kflow
    result = kflow.tune("digits-mlp", tuner="random", max_trials=5, max_epochs=10,
                        search_args=["dropout=0.0:0.5", "optimizer=adam,sgd"])
    print(result.best.score, result.best_yaml)
    ```
    """
    from kflow.recipe.overrides import resolve_recipe
    from kflow.training.trainer import recipe_reference, resolved_config

    opts = TuneOptions.resolve(options, option_values)
    factor, hyperband_iterations = opts.factor, opts.hyperband_iterations
    max_consecutive_failed_trials, command = opts.max_consecutive_failed_trials, opts.command
    log = (lambda m: print("kflow:", m, flush=True)) if verbose else (lambda m: None)
    # -- check everything before any trial ------------------------------------------
    if tuner not in TUNERS:
        raise ConfigError(
            f"Unknown tuner '{tuner}'{did_you_mean(tuner, TUNERS)}. Choose one of: "
            f"{', '.join(TUNERS)}."
        )
    for label, value, low in (("max_trials", max_trials, 1), ("max_epochs", max_epochs, 1),
                              ("cv", cv, 2), ("factor", factor, 2),
                              ("hyperband_iterations", hyperband_iterations, 1),
                              ("max_consecutive_failed_trials",
                               max_consecutive_failed_trials, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < low):
            raise ConfigError(f"{label} must be an int >= {low}. Got {value!r} instead.")
    base, engine_opts = resolve_recipe(recipe, overrides, set_args)
    cls = type(base)
    seed = int(seed if seed is not None else engine_opts.get("seed", 0))
    pinned, yaml_search = _pinned_names(recipe, cls, overrides, set_args)
    origin = f"the search: block of '{recipe}'" if yaml_search else "search="
    space = SearchSpace.build(
        base, search={**yaml_search, **dict(search or {})}, search_args=search_args,
        pinned=pinned, only=search_only, search_origin=origin,
    )
    if tuner == "hyperband" and "epochs" in space.dims:
        raise ConfigError(
            "Hyperband sets each trial's epochs itself (up to --max-epochs); drop 'epochs' "
            "from the search."
        )
    max_epochs = int(max_epochs or base.hparams["epochs"])
    if tuner != "hyperband" and max_trials is None:
        max_trials = DEFAULT_MAX_TRIALS
    if tuner == "grid":
        size = space.grid_size()
        if size > max_trials:
            raise ConfigError(
                f"The grid of {space.owner} has {size:,} combinations ({space.grid_breakdown()})"
                f", more than --max-trials {max_trials}. Narrow it (--search NAME=A,B, "
                f"--set NAME=VALUE, --search-only) or raise --max-trials to {size}."
            )
    has_val = base.hparams["val_fraction"] > 0
    task = base.load_data().task
    obj = resolve_objective(objective, base, task, has_val=has_val, cv=cv)

    # Trials: early stopping on, gradient logging off (unless fixed by the user).
    fixed = {k: v for k, v in (("early_stopping", True), ("grad_log_every", 0))
             if k in cls.hparam_specs() and k not in pinned}
    label = cls.name or cls.__name__
    base_config = {k: v for k, v in resolved_config(base, seed).items() if k != "kflow_version"}
    settings = {
        "recipe": recipe_reference(base), "config": base_config, "tuner": tuner,
        "objective": [obj.name, obj.direction], "cv": cv, "space": space.to_config(),
        "max_epochs": max_epochs, "seed": seed, "fixed": fixed,
        **({"factor": factor, "hyperband_iterations": hyperband_iterations}
           if tuner == "hyperband" else {}),
    }
    if tune_dir is None:
        tune_dir = Path(opts.tunes_root) / f"tune-{label}-{tuner}-{_settings_hash(settings)}"
    tune_dir = Path(tune_dir)
    from kflow.tuning import tuner as kt_bridge

    worker, chief = kt_bridge.is_worker(), kt_bridge.is_chief()
    resumed = _check_settings(tune_dir, settings, overwrite, worker)
    command = command or f"kflow tune {recipe if isinstance(recipe, str) else label} " \
                         f"--tuner {tuner}"

    # -- search ---------------------------------------------------------------------
    budget = (f"up to {max_trials} trials" if tuner != "hyperband" else
              "Hyperband: " + _hyperband_text(max_epochs, factor, hyperband_iterations,
                                              max_trials))
    role = " (chief: serving the oracle)" if chief else (
        f" (worker {kt_bridge.tuner_id()})" if worker else "")
    log(f"{'resuming' if resumed else 'tuning'} {label} with {tuner} search in {tune_dir}"
        f"{role}; objective: {obj.describe()}; {budget}, {max_epochs} epochs max per trial")
    for line in space.describe():
        log(f"  search {line}")

    runner = TrialRunner(space=space, objective=obj, tune_dir=tune_dir, seed=seed,
                         max_epochs=max_epochs, fixed=fixed, worker=kt_bridge.tuner_id(),
                         log=log)
    oracle = kt_bridge.make_oracle(
        tuner, objective=obj.to_keras_tuner(), hyperparameters=space.to_keras_tuner(),
        max_trials=max_trials, max_epochs=max_epochs, seed=seed, factor=factor,
        hyperband_iterations=hyperband_iterations,
        max_consecutive_failed_trials=max_consecutive_failed_trials,
    )
    state = {"best": None, "done": 0}

    def on_trial(outcome: TrialOutcome) -> None:
        state["done"] += 1
        vals = _fmt_values(outcome.values)
        if outcome.failed:
            log(f"trial {outcome.trial_id} failed ({outcome.seconds:.1f} s): {outcome.reason}"
                f" [{vals}]")
        else:
            if obj.better(outcome.score, state["best"]):
                state["best"] = outcome.score
            log(f"trial {outcome.trial_id}: {obj.name}={outcome.score:.4f} in "
                f"{outcome.epochs_run} epochs ({outcome.seconds:.1f} s) [{vals}]; best so far "
                f"{state['best']:.4f}")
        if not worker:
            rows = _collect_rows(tuner_obj.oracle, tune_dir, space, tuner_obj.outcomes)
            write_trials_csv(TuneDir(tune_dir).trials_csv, rows, space)

    with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner's "Reloading Tuner..."
        tuner_obj = kt_bridge.KflowTuner(oracle, runner=runner, tune_dir=tune_dir,
                                         on_trial=on_trial)
    if resumed and not worker:
        done = [t for t in tuner_obj.oracle.trials.values()
                if t.status in ("COMPLETED", "FAILED")]
        log(f"{len(done)} trials already done; continuing")
    failure: str | None = None
    start = time.perf_counter()
    try:
        with _quiet_search():
            tuner_obj.search()
    except RuntimeError as exc:
        if "consecutive failures" not in str(exc):
            raise
        failure = str(exc).splitlines()[0]
    elapsed = time.perf_counter() - start

    if worker:
        rows = [_row(o) for o in tuner_obj.outcomes.values()]
        log(f"worker {kt_bridge.tuner_id()} done: ran {len(rows)} trials; the chief writes "
            "the report")
        return TuneResult(tune_dir=tune_dir, objective=obj, trials=rows)

    # -- outputs --------------------------------------------------------------------
    rows = _collect_rows(tuner_obj.oracle, tune_dir, space, tuner_obj.outcomes)
    result = _write_outputs(tune_dir, rows, space, obj, command=command, tuner=tuner,
                            label=label, elapsed=elapsed, runner=runner, log=log)
    if failure:
        last = next((r.reason for r in reversed(rows) if r.reason), "")
        raise RunError(
            f"{max_consecutive_failed_trials} trials in a row failed, so the search stopped "
            f"(last reason: {last}). See {TuneDir(tune_dir).trials_csv}."
        )
    if retrain and result.best is not None:
        result.retrained = _retrain(result, runner, log)
    return result


@contextlib.contextmanager
def _quiet_search():
    """Hides TensorFlow's "tf.function retracing" warnings (a model per trial) and
    KerasTuner's tracebacks of failed trials (kflow prints the reason)."""
    import tensorflow as tf
    from keras_tuner.src import config as kt_config

    logger = tf.get_logger()
    level, debug = logger.level, kt_config.DEBUG
    logger.setLevel("ERROR")
    kt_config.DEBUG = False  # KerasTuner prints a failed trial's traceback; kflow one line
    try:
        yield
    finally:
        logger.setLevel(level)
        kt_config.DEBUG = debug


def _hyperband_text(max_epochs: int, factor: int, iterations: int,
                    cap: int | None) -> str:
    plan = hyperband_schedule(max_epochs, factor, iterations)
    trials = sum(p[2] for p in plan)
    epochs = sum(p[2] * p[3] for p in plan)
    text = f"{trials} trials, {epochs} epochs in all (factor {factor})"
    return text + (f", capped at {cap} trials" if cap and cap < trials else "")


def _row(outcome: TrialOutcome, status: str | None = None) -> TrialRow:
    return TrialRow(
        trial_id=outcome.trial_id, status=status or outcome.status,
        score=outcome.score if (status or outcome.status) == COMPLETED else None,
        values=dict(outcome.values), epochs=outcome.epochs, epochs_run=outcome.epochs_run,
        epochs_spent=outcome.epochs_spent, best_epoch=outcome.best_epoch,
        seconds=outcome.seconds, worker=outcome.worker, reason=outcome.reason,
    )


def _collect_rows(oracle: Any, tune_dir: Path, space: SearchSpace,
                  outcomes: Mapping[str, TrialOutcome]) -> list[TrialRow]:
    """One row per trial the oracle knows, joined with each trial's `trial.json`."""
    rows = []
    order = list(getattr(oracle, "start_order", [])) or sorted(oracle.trials)
    order += [t for t in oracle.trials if t not in order]
    for trial_id in order:
        trial = oracle.trials[trial_id]
        outcome = outcomes.get(trial_id) or read_outcome(TuneDir(tune_dir).trial(trial_id))
        status = trial.status
        if status not in ("COMPLETED", "FAILED") and outcome is not None \
                and trial_id in outcomes:
            status = outcome.status  # finished in this process, not yet ended in the oracle
        if outcome is not None:
            row = _row(outcome, status)
            if status == COMPLETED and row.score is None:
                row.score = trial.score
        else:
            values = space.active(trial.hyperparameters.values)
            row = TrialRow(trial_id=trial_id, status=status,
                           score=trial.score if status == COMPLETED else None, values=values,
                           epochs=trial.hyperparameters.values.get("tuner/epochs"))
        if status == "FAILED" and not row.reason and (trial.message or "").strip():
            row.reason = trial.message.strip().splitlines()[-1]
        rows.append(row)
    return rows


def _write_outputs(tune_dir: Path, rows: list[TrialRow], space: SearchSpace, obj: Objective,
                   *, command: str, tuner: str, label: str, elapsed: float,
                   runner: TrialRunner, log: Any) -> TuneResult:
    import yaml

    best = None
    for r in rows:
        if r.completed and (best is None or obj.better(r.score, best.score)):
            best = r
    td = TuneDir(tune_dir)
    write_trials_csv(td.trials_csv, rows, space)
    best_config = None
    if best is not None:
        config_file = RunDir(runner.trial_dir(best.trial_id)).config
        best_config = yaml.safe_load(config_file.read_text())
        write_best_yaml(td.best_yaml, best_config, trial_id=best.trial_id,
                        objective=obj, score=best.score, command=command,
                        fixed=runner.fixed)
    completed = sum(r.completed for r in rows)
    summary = {
        "title": f"kflow tune {label} ({tuner})",
        "command": command,
        "objective": obj.describe(),
        "trials": f"{len(rows)} ({completed} completed, {len(rows) - completed} failed)",
        "epochs trained": sum(int(r.epochs_spent or 0) for r in rows),
        "search time (this session)": f"{elapsed:.1f} s",
        "best trial": (f"{best.trial_id}: {obj.name} = {best.score:.6g} "
                       f"[{_fmt_values(best.values)}]" if best else "none completed"),
        "best configuration": "best.yaml (kflow train best.yaml)" if best else "-",
        "tuning directory": str(tune_dir),
    }
    write_report(td.report, rows, space=space, objective=obj, summary=summary,
                 best_id=best.trial_id if best else None)
    if best is not None:
        log(f"best trial {best.trial_id}: {obj.name}={best.score:.4f} "
            f"[{_fmt_values(best.values)}]")
        log(f"wrote {td.trials_csv}, {td.report}, {td.best_yaml}")
    else:
        log(f"no trial completed; see {td.trials_csv}")
    return TuneResult(tune_dir=tune_dir, objective=obj, trials=rows, best=best,
                      best_config=best_config)


def _retrain(result: TuneResult, runner: TrialRunner, log: Any) -> Any:
    """Trains the best configuration on train + validation for its best epoch count."""
    from kflow.run import RunDir, load_run
    from kflow.training.engine import train

    best = result.best
    epochs = max(1, int(round(best.best_epoch or best.epochs_run or runner.max_epochs)))
    run_dir = result.tune_dir / "best_retrained"
    log(f"retraining trial {best.trial_id}'s configuration on train + validation for "
        f"{epochs} epochs in {run_dir}")
    if RunDir(run_dir).finished:
        return load_run(run_dir, load_model=False)
    import keras

    keras.backend.clear_session()
    run = train(str(result.best_yaml), overrides={"val_fraction": 0.0, "early_stopping": False,
                                                  "epochs": epochs},
                run_dir=run_dir, verbose=0)
    test = run.metrics.get("test", {})
    if test:
        log("retrained: test " + ", ".join(f"{k}={v:.4f}" for k, v in test.items()))
    return run

