"""`Trainer`: the one training setup every command goes through.

`kflow.train`, `kflow.cross_validate`, `kflow.lr_find`, `kflow.tune` (each
trial is a `kflow.train`) and `kflow.export_run` (which re-makes a run's
splits) all build a `Trainer`. It owns, once:

1. resolving the recipe (name, file, YAML, class or instance) with its seed,
2. seeding and op determinism,
3. loading and splitting the data (cached),
4. the `tf.distribute` strategy,
5. building and compiling the model inside the strategy scope,
6. the callbacks, in the order `CALLBACK_ORDER` declares,
7. fitting and evaluating.

What a run leaves on disk belongs to `kflow.run`; `Trainer.run` writes
through a `RunDir` and nothing else names a run file.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kflow.recipe.base import Recipe
from kflow.run import RunDir

__all__ = ["Trainer", "FitOutcome", "CALLBACK_ORDER", "set_seed", "recipe_reference",
           "resolved_config", "auto_steps_per_execution"]

#: The callbacks of a fit, in the order Keras calls them at each epoch end.
CALLBACK_ORDER = (
    "shuffle_epoch",    # sets the epoch whose row order the training pipeline draws
    "nan_guard",        # first: stops (and restores) before anything records a NaN epoch
    "ema_weights",      # swaps the EMA weights in at epoch end (and out at the next start)
    "lr_logger",        # adds `lr` to the logs
    "fine_tune_phase",  # transfer runs: adds `phase` (1 backbone frozen, 2 fine-tuning)
    "lr_plateau",       # after the rate of the epoch is logged: lowers it on a plateau
    "dead_units",       # adds dead-unit fractions to the logs
    "grad_norms",       # adds gradient norms to the logs, writes grad_norms.csv
    "progress",         # prints the epoch line: after every callback that adds logs
    "history",          # history.csv: sees every log added above
    "early_stopping",   # may restore the best weights at the end
    "best_checkpoint",  # checkpoints/best.keras
    "backup",           # after history and early stopping: saves their state of the epoch
    "tensorboard",      # tensorboard/ event files
    "profiler",         # --profile-steps A:B: a TensorBoard profile of those steps
    "user",             # the caller's own callbacks, last
)

_DETERMINISM_ON = False


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy and TensorFlow; makes TF ops deterministic."""
    global _DETERMINISM_ON
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic and not _DETERMINISM_ON:
        tf.config.experimental.enable_op_determinism()
        _DETERMINISM_ON = True


def recipe_reference(recipe: Recipe) -> str:
    """How `config.yaml` names the recipe so that `kflow train config.yaml` finds it again.

    A recipe shipped with kflow: its registered name. A recipe loaded from a
    file: `/absolute/path.py:ClassName`. A recipe in an importable module:
    `package.module:ClassName`.
    """
    cls = type(recipe)
    module_name = cls.__module__
    if module_name.startswith("kflow.catalog.") and cls.name:
        return cls.name
    module = sys.modules.get(module_name)
    source = getattr(module, "__file__", None)
    if module_name.startswith("kflow_user_recipes.") or module_name == "__main__":
        return f"{Path(source).resolve()}:{cls.__name__}" if source else cls.__name__
    return f"{module_name}:{cls.__qualname__}"


def resolved_config(recipe: Recipe, seed: int) -> dict[str, Any]:
    """The full configuration of a run, as written to `config.yaml`."""
    from kflow import __version__

    return {"recipe": recipe_reference(recipe), "seed": seed, **recipe.config(),
            "kflow_version": __version__}


def auto_steps_per_execution(steps_per_epoch: int, cap: int = 32) -> int:
    """Train steps per `tf.function` call: amortize Python overhead, keep epochs whole.

    At most `cap` steps: the largest divisor of `steps_per_epoch` up to `cap`
    when it is at least 8 (or `cap`, if smaller), so that every call ends
    inside its epoch and the training data can stream (one iterator per
    `fit`, see `Trainer.stream_epochs`; an iterator costs ~10 ms, a call
    ~0.5 ms): 40 steps -> 20, 1000 -> 25; else `cap` (37 -> 32).
    """
    cap = max(1, min(steps_per_epoch, cap))
    for d in range(cap, min(8, cap) - 1, -1):
        if steps_per_epoch % d == 0:
            return d
    return cap


@dataclass
class FitOutcome:
    """What one fit produced besides the model's weights.

    Attributes:
        history: Per-epoch logs of this fit (`{"loss": [...], ...}`).
        epochs_run: Epochs in the history.
        stopped_early: Whether early stopping ended the fit.
        stop_reason: Early stopping's or the NaN guard's sentence.
        best_epoch: The epoch whose weights the model holds (1-based).
        seconds: Wall time of `fit` in this process.
        extra: Facts the NaN guard records (`nan_stop`).
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    stopped_early: bool = False
    stop_reason: str = ""
    best_epoch: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The keys `metrics.json` records about the fit."""
        return {"epochs_run": self.epochs_run, "stopped_early": self.stopped_early,
                "stop_reason": self.stop_reason, "best_epoch": self.best_epoch,
                "train_seconds_this_session": round(self.seconds, 3), **self.extra}


class Trainer:
    """One training setup: a recipe with its seed, data splits, strategy and callbacks.

    Args:
        recipe: A registered name, `file.py[:Class]`, a YAML config, a Recipe
            class or instance.
        overrides: Hyperparameter values (flat, dotted or grouped keys).
        set_args: `KEY=VALUE` strings (as from `--set`), applied last.
        epochs: Shortcut for `overrides={"epochs": N}`. Defaults to `None`.
        seed: Seed for splits, initialization and shuffling. Defaults to the
            YAML's `seed`, else 0.
        strategy: "auto", "default", "mirrored", "tpu" or "multi_worker".
            Defaults to the YAML's `strategy`, else "auto".
        verbose: 0 silent, 1 progress bar, 2 one line per epoch; "auto" picks
            1 on a terminal, else 2.
        allow_recipe_files: Whether a YAML config may name a recipe `.py`
            file to import. Defaults to `True` (the user passed the YAML).
        profile_steps: `"A:B"` or `(A, B)`: write a TensorBoard profile of
            training steps A to B (1-based) to the run's `tensorboard/`.
            Defaults to `None`.
        track: `"mlflow"` logs params, per-epoch metrics, the model and the
            report to MLflow (`pip install kflow[mlflow]`; see
            `kflow.tracking.mlflow`). Defaults to `None` (TensorBoard only).

    Example:

    ```python
    trainer = kflow.training.Trainer("digits-mlp", epochs=3, seed=1)
    splits = trainer.splits()
    model = trainer.build_model(splits.train)
    outcome = trainer.fit(model, splits.train, splits.val)
    print(trainer.evaluate(model, {"test": splits.test}))
    ```
    """

    def __init__(
        self,
        recipe: str | type[Recipe] | Recipe,
        *,
        overrides: Mapping[str, Any] | None = None,
        set_args: Iterable[str] = (),
        epochs: int | None = None,
        seed: int | None = None,
        strategy: str = "auto",
        verbose: int | str = "auto",
        allow_recipe_files: bool = True,
        profile_steps: str | tuple[int, int] | None = None,
        track: str | None = None,
    ):
        from kflow.recipe.overrides import resolve_recipe

        overrides = dict(overrides or {})
        if epochs is not None:
            overrides["epochs"] = epochs
        recipe_obj, engine = resolve_recipe(recipe, overrides, set_args,
                                            allow_files=allow_recipe_files)
        self.seed = int(seed if seed is not None else engine.get("seed", recipe_obj.seed))
        self.recipe = (recipe_obj if recipe_obj.seed == self.seed
                       else recipe_obj.with_context(seed=self.seed))
        self.strategy_name = engine.get("strategy", strategy) if strategy == "auto" else strategy
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else int(verbose)
        self._splits: Any = None
        self._strategy: Any = None
        self._epoch_key: Any = None  # the training pipeline's, when it is one pass per epoch
        from kflow.training.accelerator import resolve_deterministic
        from kflow.training.distributed import cluster_for, multi_worker_strategy

        deterministic = resolve_deterministic(self.hparams["deterministic"])
        if deterministic != self.hparams["deterministic"]:  # config.yaml: the value used
            self.recipe = self.recipe.with_context(deterministic=deterministic)
        self.cluster = cluster_for(self.strategy_name)
        if self.cluster is not None:  # collectives are configured before any TF op
            self._strategy = multi_worker_strategy(self.cluster)
        from kflow.training.features import parse_profile_steps

        self.profile_steps = (tuple(profile_steps) if isinstance(profile_steps, (tuple, list))
                              else parse_profile_steps(profile_steps))
        from kflow.tracking import check_tracker

        self.track = check_tracker(track if track is not None else engine.get("track"))
        self._one_hot = 0

    @classmethod
    def from_run(cls, run_dir: str | Path, *, trust_recipe_file: bool = False,
                 **kwargs: Any) -> Trainer:
        """The setup a run directory's `config.yaml` records (same recipe, seed, splits).

        Args:
            run_dir: A run directory.
            trust_recipe_file: Allow importing a recipe `.py` file that the
                config names. A run directory may come from someone else, so
                this is off by default.
        """
        rd = RunDir(run_dir)
        rd.require_run()
        return cls(str(rd.config), allow_recipe_files=trust_recipe_file, **kwargs)

    # -- the pieces -------------------------------------------------------------------
    @property
    def label(self) -> str:
        return self.recipe.name or type(self.recipe).__name__

    @property
    def hparams(self) -> dict[str, Any]:
        return self.recipe.hparams

    def config(self) -> dict[str, Any]:
        """The resolved configuration (`config.yaml`)."""
        return resolved_config(self.recipe, self.seed)

    def say(self, message: str) -> None:
        if self.verbose:
            print("kflow:", message, flush=True)

    def splits(self) -> Any:
        """Seeds, loads the recipe's data and splits it (stratified, seeded); cached."""
        if self._splits is None:
            from kflow.data.splits import train_val_test_split

            set_seed(self.seed, deterministic=self.hparams["deterministic"] is True)
            data = self.recipe.load_data()
            if hasattr(data, "stream_splits"):  # kflow.data.streaming: read in chunks
                self._splits = data.stream_splits(
                    self.hparams["val_fraction"], self.hparams["test_fraction"], self.seed)
                return self._splits
            self._splits = train_val_test_split(
                data, self.hparams["val_fraction"], self.hparams["test_fraction"], self.seed)
        return self._splits

    @property
    def strategy(self) -> Any:
        if self._strategy is None:
            from kflow.training.strategy import resolve_strategy

            self._strategy = resolve_strategy(self.strategy_name)
        return self._strategy

    def batch_size(self, part: Any) -> int:
        bs = self.hparams["batch_size"]
        return len(part) if bs == "full" else int(bs)

    def steps_per_epoch(self, part: Any) -> int:
        return math.ceil(len(part) / self.batch_size(part))

    def build_optimizer(self, steps_per_epoch: int, learning_rate: float | None = None,
                        *, scale: float = 1.0) -> Any:
        """The recipe's optimizer and schedule (`learning_rate` forces a constant rate).

        `scale` multiplies the rate (the whole schedule): the fine-tuning phase
        of a transfer run.
        """
        from kflow.optim.optimizers import build_optimizer
        from kflow.optim.schedules import build_schedule

        h = self.hparams
        lr = learning_rate * scale if learning_rate is not None else build_schedule(
            h["lr_schedule"], h["learning_rate"] * scale, steps_per_epoch=steps_per_epoch,
            epochs=h["epochs"], warmup_epochs=h["warmup_epochs"], decay_rate=h["decay_rate"],
            decay_epochs=h["decay_epochs"],
        )
        return build_optimizer(
            h["optimizer"], lr, momentum=h["momentum"], nesterov=h["nesterov"],
            weight_decay=h["weight_decay"] or None, clipnorm=h["clipnorm"],
            global_clipnorm=h["global_clipnorm"], ema=h["ema"], ema_momentum=h["ema_momentum"],
            grad_accumulation=h["grad_accumulation"],
        )

    def build_model(self, train: Any, *, learning_rate: float | None = None,
                    insight: bool = True) -> Any:
        """Builds and compiles the recipe's model on `train`, inside the strategy scope.

        Args:
            train: The training part (preprocessing is fitted on it only).
            learning_rate: A constant rate instead of the recipe's schedule.
            insight: Wrap the model for gradient-norm logging when the
                recipe's `grad_log_every` asks for it.
        """
        from kflow.insight.engine_hooks import wrap_model
        from kflow.training.accelerator import precision_policy

        prepare = getattr(self.recipe, "prepare_backbone", None)
        if prepare is not None:  # transfer: may pretrain a run first (outside any scope)
            prepare(log=self.say)
        with self.strategy.scope():
            with precision_policy(self.hparams["precision"]):
                model = self.recipe.build_model(train)
            if insight:
                model = wrap_model(model, self.hparams.get("grad_log_every", 0))
        self._compile(model, train, learning_rate)
        return model

    def _compile(self, model: Any, train: Any, learning_rate: float | None = None, *,
                 scale: float = 1.0) -> None:
        """Compiles `model` with the recipe's loss, metrics and a new optimizer."""
        from kflow.training.distributed import adapt_model
        from kflow.training.features import smoothed_loss

        steps = self.steps_per_epoch(train)
        with self.strategy.scope():
            loss, metrics, one_hot = smoothed_loss(
                train.task, self.hparams["label_smoothing"], self.recipe.loss(train.task),
                self.recipe.metrics(train.task))
            self._one_hot = train.num_classes if one_hot else 0
            model.compile(
                optimizer=self.build_optimizer(steps, learning_rate, scale=scale),
                loss=loss, metrics=metrics,
                steps_per_execution=self._steps_per_execution(steps),
                jit_compile=self.hparams["jit_compile"],
            )
        adapt_model(model, self.strategy)  # multi-worker, multi-step with replicas

    def _steps_per_execution(self, steps_per_epoch: int) -> int:
        from kflow.training.accelerator import is_tpu_strategy, tpu_steps_per_execution

        if not self.hparams["steps_per_execution"] and is_tpu_strategy(self.strategy):
            return tpu_steps_per_execution(steps_per_epoch)
        # With several replicas, multi-step runs through kflow.training.distributed.adapt_model.
        if self.hparams["steps_per_execution"]:
            return self.hparams["steps_per_execution"]
        # Gradient statistics are recorded at the first step of a call: a call
        # spans no more steps than the recording interval asks for.
        every = self.hparams.get("grad_log_every", 0) or steps_per_epoch
        return auto_steps_per_execution(steps_per_epoch, min(32, every))

    def dataset(self, part: Any, *, training: bool, cache: bool = False,
                first_epoch: int | None = None) -> Any:
        """A tf.data pipeline of `part`: shuffled batches for training, else in order.

        `cache` keeps an evaluation pipeline's batches in memory after the first
        pass (validation every epoch: a third of a digits-mlp epoch without it).
        With `first_epoch`, an in-memory training part becomes an endless stream
        of epochs from that one (see `make_dataset`; `fit` needs
        `steps_per_epoch`); see `stream_epochs` for when to ask for it.
        """
        from kflow.data.pipeline import make_dataset
        from kflow.training.features import one_hot_targets, sample_weights

        if getattr(part, "streaming", False):  # read from disk per epoch
            from kflow.data.pipeline import EpochKey

            if training:
                self._epoch_key = EpochKey()
            ds = part.tf_dataset(self.batch_size(part) if training else
                                 max(self.batch_size(part), 256), training=training,
                                 seed=self.seed, epoch=self._epoch_key if training else 0,
                                 class_weight=self.hparams["class_weight"] if training else None)
        elif training:
            from kflow.data.pipeline import EpochKey

            if first_epoch is None:  # one pass per epoch, set by the shuffle_epoch callback
                self._epoch_key = EpochKey()
            ds = make_dataset(part.x, part.y, self.batch_size(part), training=True,
                              seed=self.seed,
                              epoch=self._epoch_key if first_epoch is None else None,
                              sample_weight=sample_weights(part, self.hparams["class_weight"]),
                              first_epoch=first_epoch)
        else:
            ds = make_dataset(part.x, part.y, max(self.batch_size(part), 256), training=False,
                              cache=cache)
        ds = one_hot_targets(ds, self._one_hot) if self._one_hot else ds
        from kflow.training.accelerator import fixed_batches, is_tpu_strategy

        return (fixed_batches(ds, self.batch_size(part))
                if training and is_tpu_strategy(self.strategy) else ds)

    def stream_epochs(self, part: Any, steps_per_execution: int = 1) -> bool:
        """Whether `part` trains from an endless stream of epochs (one iterator per fit).

        In-memory data, except under a TPU strategy (fixed batches per epoch),
        when every train-function call of `steps_per_execution` steps ends
        inside its epoch (Keras' multi-step call runs its steps whatever the
        epoch boundary; a finite pass per epoch stops it there).
        """
        from kflow.training.accelerator import is_tpu_strategy

        return (not getattr(part, "streaming", False) and not is_tpu_strategy(self.strategy)
                and self.steps_per_epoch(part) % max(1, steps_per_execution) == 0)

    def monitor(self, train: Any, has_val: bool) -> tuple[str, str]:
        monitor, mode = self.recipe.monitor(train.task)
        return (monitor if has_val else monitor.removeprefix("val_")), mode

    def callbacks(self, train: Any, *, has_val: bool, rd: RunDir | None = None,
                  resuming: bool = False, user: Sequence[Any] = ()) -> tuple[list[Any], Any]:
        """The fit's callbacks in `CALLBACK_ORDER`, and the early stopper (or `None`)."""
        from kflow.insight.engine_hooks import InsightHooks
        from kflow.training.callbacks import (
            BestModelCheckpoint,
            EpochTensorBoard,
            ExplainedEarlyStopping,
            ResumableBackup,
        )
        from kflow.training.callbacks.history_csv import HistoryCSV, truncate_history

        h = self.hparams
        monitor, mode = self.monitor(train, has_val)
        insight = InsightHooks(rd.path if rd else None, h.get("grad_log_every", 0),
                               probe_x=train.x, log=self.say)
        named: dict[str, Any] = dict(insight.named_callbacks())
        if self._epoch_key is not None:  # (an endless stream of epochs needs none)
            named["shuffle_epoch"] = self._epoch_key.callback()
        plan = self.fine_tune_plan()
        if plan is not None:
            from kflow.recipe.transfer import phase_logger

            named["fine_tune_phase"] = phase_logger(plan.freeze_epochs)
        if rd is not None:
            if resuming:
                truncate_history(rd.history, _backup_epoch(rd))
            named["history"] = HistoryCSV(rd.history, append=resuming)
        stopper = None
        if h["early_stopping"]:
            stopper = ExplainedEarlyStopping(
                state_dir=None, monitor=monitor, mode=mode,
                patience=h["patience"], restore_best_weights=True, log=self.say)
            named["early_stopping"] = stopper
        from kflow.training.features import feature_callbacks

        named.update(feature_callbacks(h, monitor=monitor, mode=mode, log=self.say,
                                       profile_dir=rd.tensorboard if rd else None,
                                       profile_steps=self.profile_steps))
        if rd is not None:
            named["best_checkpoint"] = BestModelCheckpoint(rd.best_checkpoint, monitor=monitor,
                                                           mode=mode)
            named["tensorboard"] = EpochTensorBoard(rd.tensorboard)
            resumable = [named[k] for k in ("ema_weights", "lr_plateau") if k in named]
            named["backup"] = ResumableBackup(
                rd.backup, callbacks=[cb for cb in (stopper, named["best_checkpoint"]) if cb]
                + resumable)
        ordered = [named[k] for k in CALLBACK_ORDER if k in named]
        self.callback_slots = named  # {slot: callback} of the last fit (profiling names them)
        self._insight = insight
        return ordered + list(user), stopper

    def fine_tune_plan(self) -> Any:
        """The recipe's frozen/fine-tuning phases (`kflow.recipe.transfer`), or `None`."""
        plan = getattr(self.recipe, "fine_tune_plan", None)
        return plan() if plan is not None else None

    def fit(self, model: Any, train: Any, val: Any = None, *, rd: RunDir | None = None,
            resuming: bool = False, user_callbacks: Sequence[Any] = (),
            verbose: int | None = None) -> FitOutcome:
        """Trains `model` on `train` (validating on `val`) with the recipe's callbacks.

        A transfer recipe with `freeze_epochs` trains in two phases, both
        here: epochs 1..freeze_epochs with the backbone frozen (compiled with
        the recipe's optimizer), then the backbone unfrozen (all or its top
        `fine_tune_layers`) and the model compiled again with a new optimizer
        at `fine_tune_lr_scale` times the rate, which continues the step
        count (schedules and gradient logs go on) and the epoch numbers
        (`history.csv` is one table, with a `phase` column). Early stopping
        watches the fine-tuning phase only. Each phase keeps its own backup
        (`RunDir.backup`, `RunDir.fine_tune_backup`), since their optimizers
        differ: a resumed run continues in the phase its latest backup
        belongs to.
        """
        # One iterator per fit where the epochs can stream, else one pass per epoch
        # (built before the callbacks: its EpochKey). The phases compile alike.
        stream = self.stream_epochs(train, model.steps_per_execution)
        self._epoch_key = None
        train_ds = None if stream else self.dataset(train, training=True)
        plan = self.fine_tune_plan()
        state = _resume_state(rd) if (rd is not None and resuming) else None
        initial_epoch = state.epochs_done if state else 0
        epochs = initial_epoch if (state and state.stopped) else self.hparams["epochs"]
        callbacks, stopper = self.callbacks(train, has_val=val is not None, rd=rd,
                                            resuming=resuming, user=user_callbacks)
        from kflow.training.callbacks import wait_for_writes

        val_ds = self.dataset(val, training=False, cache=True) if val is not None else None
        verbose = self.verbose if verbose is None else verbose
        start = time.perf_counter()
        logs: dict[str, list[float]] = {}

        def run_fit(cbs: list[Any], end: int, begin: int) -> None:
            ds, steps = train_ds, None
            if stream:
                ds = self.dataset(train, training=True, first_epoch=begin)
                steps = self.steps_per_epoch(train)
            hist = model.fit(ds, validation_data=val_ds, epochs=end, initial_epoch=begin,
                             steps_per_epoch=steps, callbacks=cbs, verbose=verbose,
                             shuffle=False)
            for k, vals in hist.history.items():
                logs.setdefault(k, []).extend(float(v) for v in vals)

        try:
            if plan is None:
                run_fit(callbacks, epochs, initial_epoch)
            else:
                self._fit_phases(model, train, plan, callbacks, stopper,
                                 rd if resuming else None, run_fit, rd)
        finally:
            wait_for_writes()  # the callbacks' background backup writes (even after a crash)
        from kflow.run import read_history

        history = read_history(rd.history) if rd is not None else logs
        history.pop("epoch", None)
        epochs_run = len(next(iter(history.values()), []))
        outcome = FitOutcome(history=history, epochs_run=epochs_run,
                             seconds=time.perf_counter() - start, best_epoch=epochs_run,
                             extra=self._insight.extra_metrics())
        if stopper is not None and hasattr(stopper, "best_epoch"):  # (it ran: not only
            outcome.stopped_early = stopper.stopped_epoch > 0      # a frozen phase)
            outcome.stop_reason = stopper.message
            if stopper.best_epoch is not None:
                outcome.best_epoch = stopper.best_epoch + 1
        if outcome.extra.get("stop_reason"):
            outcome.stop_reason = outcome.extra.pop("stop_reason")
        if plan is not None:
            outcome.extra["fine_tune"] = {
                "freeze_epochs": plan.freeze_epochs, "fine_tune_layers": plan.layers,
                "fine_tune_lr_scale": plan.lr_scale,
                "first_fine_tune_epoch": plan.freeze_epochs + 1
                if plan.freeze_epochs < self.hparams["epochs"] else None}
        return outcome

    def _fit_phases(self, model: Any, train: Any, plan: Any, callbacks: list[Any],
                    stopper: Any, resumed: RunDir | None, run_fit: Any,
                    rd: RunDir | None) -> None:
        """The frozen phase, then the fine-tuning phase (see `fit`).

        `resumed`: the run directory when resuming (its backups say where to go on).
        """
        from kflow.training.callbacks import ResumableBackup, backup_state
        from kflow.training.callbacks.history_csv import HistoryCSV

        total = self.hparams["epochs"]
        freeze = min(plan.freeze_epochs, total)
        phase_two = backup_state(resumed.fine_tune_backup) if resumed is not None else None
        if phase_two is None:  # the frozen phase (or its backup only, when it is done)
            first = backup_state(resumed.backup) if resumed is not None else None
            self.recipe.set_phase(model, 1)
            self._compile(model, train)
            done = first.epochs_done if first else 0
            run_fit([cb for cb in callbacks if cb is not stopper],
                    done if (first and first.stopped) else freeze, done)
            if model.stop_training or (first and first.stopped) or freeze >= total:
                return  # stopped (NaN guard), or no fine-tuning epoch asked for
        steps_done = int(model.optimizer.iterations.numpy())
        self.recipe.set_phase(model, 2)
        self._compile(model, train, scale=plan.lr_scale)
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(steps_done)  # schedules and grad logs continue
        self.say(f"fine-tuning from epoch {freeze + 1}: backbone "
                 f"{'top ' + str(plan.layers) + ' layers' if plan.layers else 'all layers'} "
                 f"trainable, learning rate x {plan.lr_scale:g}")
        phase_cbs = []
        for cb in callbacks:
            if isinstance(cb, ResumableBackup) and rd is not None:
                cb = ResumableBackup(rd.fine_tune_backup, callbacks=cb.callbacks)
            elif isinstance(cb, HistoryCSV):
                cb.append = True  # one history.csv across the phases
            phase_cbs.append(cb)
        begin = phase_two.epochs_done if phase_two else freeze
        run_fit(phase_cbs, begin if (phase_two and phase_two.stopped) else total, begin)

    def evaluate(self, model: Any, parts: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        """`{part name: {metric: value}}` for each part that is not `None`."""
        return {name: {k: float(v) for k, v in model.evaluate(
                    self.dataset(part, training=False), verbose=0, return_dict=True).items()}
                for name, part in parts.items() if part is not None}

    # -- a whole run ------------------------------------------------------------------
    def run(self, *, run_dir: str | Path | None = None, runs_root: str | Path = "runs",
            callbacks: Sequence[Any] = (), overwrite: bool = False, save: bool = True) -> Any:
        """Trains end to end and leaves a complete run directory (see `kflow.train`)."""
        if self.cluster is not None and not getattr(self, "_on_worker", False):
            from kflow.training.distributed import worker_run

            self._on_worker = True  # one worker of a multi-worker job: chief writes the run
            try:
                return worker_run(self, self.cluster, run_dir=run_dir, runs_root=runs_root,
                                  overwrite=overwrite, callbacks=callbacks, save=save)
            finally:
                self._on_worker = False
        from kflow.run import Run

        rd, resuming = self._run_dir(run_dir, runs_root, overwrite) if save else (None, False)
        splits = self.splits()
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        if rd is not None and rd.trained:  # killed after training: complete the run
            from kflow.run import load_run

            done = load_run(rd.path)
            model, metrics = done.model, done.metrics
            self.say(f"completing {rd.path}: training had finished")
        else:
            model = self.build_model(splits.train)
            if rd is not None:
                self._write_start(rd, splits)
            self.say(f"{'resuming' if resuming else 'training'} {self.label} in "
                     f"{rd.path if rd else '(not saved)'} ({self._describe(splits)})")
            outcome = self._fit_or_mark(model, splits, rd, resuming, callbacks)
            metrics = {**self.evaluate(model, parts), **outcome.summary(), "seed": self.seed}
            metrics.update(self.recipe.reference_metrics(splits))
            metrics.update(self._baselines(splits))
            if rd is not None:
                self._save_model(rd, model)
                rd.write_json(rd.metrics, metrics)
        if rd is not None:
            self._insight_finish(rd, model, splits)
            rd.mark_finished(**{k: metrics[k] for k in ("nan_stop",) if k in metrics})
            if self.track:
                from kflow.tracking import log_run

                self.say(f"logged to {self.track}: run {log_run(self.track, rd.path)}")
        summary = ", ".join(f"{k}={v:.4f}" for k, v in metrics.get("test", {}).items())
        self.say(f"finished {self.label}: test {summary}")
        from kflow.run import read_history

        history = read_history(rd.history) if rd else outcome.history
        history.pop("epoch", None)
        return Run(run_dir=rd.path if rd else Path("."), model=model, history=history,
                   metrics=metrics, config=self.config(), info=self._info(splits))

    def _baselines(self, splits: Any) -> dict[str, Any]:
        """`{"baselines": ...}`: scikit-learn models on the same split (tables only)."""
        from kflow.insight.baselines import fit_baselines

        test = splits.test if splits.test is not None else splits.val
        found = fit_baselines(splits.train, test, seed=self.seed) if test is not None else {}
        if found:
            self.say("baselines (same split): " + ", ".join(
                f"{name} " + " ".join(f"{k}={v:.4f}" for k, v in b["test"].items())
                for name, b in found.items()))
        return {"baselines": found} if found else {}

    def _fit_or_mark(self, model: Any, splits: Any, rd: RunDir | None, resuming: bool,
                     callbacks: Sequence[Any]) -> FitOutcome:
        try:
            return self.fit(model, splits.train, splits.val, rd=rd, resuming=resuming,
                            user_callbacks=callbacks)
        except KeyboardInterrupt:
            if rd is not None:
                rd.write_status("interrupted")
            self.say(f"interrupted; re-run the same command to resume {rd.path if rd else ''} "
                     "from its last completed epoch.")
            raise
        except Exception as exc:
            if rd is not None:
                rd.write_status("failed", error=f"{type(exc).__name__}: {exc}")
            raise

    def _run_dir(self, run_dir: str | Path | None, runs_root: str | Path,
                 overwrite: bool) -> tuple[RunDir, bool]:
        import yaml

        from kflow.errors import RunError
        from kflow.run import config_hash

        current = {k: v for k, v in self.config().items() if k != "kflow_version"}
        if run_dir is not None:
            rd, resuming = RunDir.explicit(run_dir, overwrite=overwrite)
        else:
            rd, resuming = RunDir.choose(runs_root, f"{self.label}-{config_hash(current)}")
        if resuming and rd.config.is_file():
            previous = yaml.safe_load(rd.config.read_text()) or {}
            previous.pop("kflow_version", None)
            if previous != current:
                raise RunError(
                    f"Run directory '{rd.path}' holds an unfinished run with a different "
                    "config; choose another --run-dir, or delete its backup/ to start over.")
        return rd, resuming

    def _write_start(self, rd: RunDir, splits: Any) -> None:
        import yaml

        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_text(rd.config, yaml.safe_dump(self.config(), sort_keys=False))
        rd.write_json(rd.info, self._info(splits))
        from kflow.run import write_samples

        test = splits.test if splits.test is not None else splits.val
        write_samples(rd, test, splits.train, self.seed)
        rd.write_status("running")

    def _info(self, splits: Any) -> dict[str, Any]:
        from kflow.training.strategy import describe_strategy

        train = splits.train
        return {
            "recipe": recipe_reference(self.recipe), "task": train.task,
            "class_names": train.class_names, "feature_names": train.feature_names,
            "columns": {k: {"column": c.get("column", k), "kind": c.get("kind")}
                        for k, c in (train.meta.get("columns") or {}).items()} or None,
            "input_shape": list(getattr(train.x, "shape", [None])[1:]),
            "target_stats": _target_stats(train),
            "num_train": len(train),
            "num_val": len(splits.val) if splits.val is not None else 0,
            "num_test": len(splits.test) if splits.test is not None else 0,
            "strategy": describe_strategy(self.strategy),
            "batch_size": self.batch_size(train), "steps_per_epoch": self.steps_per_epoch(train),
            **({"tflite_not_offered": dict(self.recipe.tflite_not_offered)}
               if self.recipe.tflite_not_offered else {}),
        }

    def _describe(self, splits: Any) -> str:
        from kflow.training.strategy import describe_strategy

        sizes = [len(p) if p is not None else 0 for p in (splits.train, splits.val, splits.test)]
        return (f"{describe_strategy(self.strategy)}; {sizes[0]} train / {sizes[1]} val / "
                f"{sizes[2]} test samples")

    def _save_model(self, rd: RunDir, model: Any) -> None:
        from kflow.run import atomic_save
        from kflow.training.accelerator import float32_model
        from kflow.training.plain_model import to_plain_model

        atomic_save(rd.model, float32_model(to_plain_model(model)).save)  # float32 for export

    def _insight_finish(self, rd: RunDir, model: Any, splits: Any) -> None:
        from kflow.insight.engine_hooks import InsightHooks

        hooks = getattr(self, "_insight", None) or InsightHooks(
            rd.path, self.hparams.get("grad_log_every", 0), log=self.say)
        hooks.finish(model, splits, self.batch_size(splits.train))


def _target_stats(train: Any) -> dict[str, float] | None:
    """Mean and standard deviation of a regression target on the training split."""
    if train.task != "regression":
        return None
    import numpy as np

    y = np.asarray(train.y, dtype="float64")
    return {"mean": float(np.mean(y)), "std": float(np.std(y))}


def _resume_state(rd: RunDir) -> Any:
    """The latest backup: of the fine-tuning phase when there is one, else the run's."""
    from kflow.training.callbacks import backup_state

    return backup_state(rd.fine_tune_backup) or backup_state(rd.backup)


def _backup_epoch(rd: RunDir) -> int:
    """Epochs the backup holds (0 without one)."""
    state = _resume_state(rd)
    return state.epochs_done if state else 0
