"""Resume after a crash: one atomic state file per epoch, restored exactly.

`ResumableBackup` writes, at the end of every epoch, everything the rest of
training depends on into `backup_dir/latest.state.npz`: the model's
variables (weights *and* the `SeedGenerator` states of Dropout and
augmentation layers, which are in `model.variables` but not in
`model.weights`), the optimizer's variables (step counter, moments), Keras'
global seed generator when one exists, the Python and NumPy global random
states, the epoch counter, whether training stopped, and the state of the
callbacks it is given (early stopping: wait, best, best weights). The
shuffle order is a pure function of `(seed, epoch)` (see
`kflow.data.make_dataset`), so it needs no state. Re-running the same
training restores all of it and continues with the next epoch; on CPU with
op determinism the resumed run is identical to one that never stopped.

The backup is *not* removed when `fit` ends: a kill during the final
evaluation must not lose the training. The run layer removes it once the
run is finished (`kflow.run.RunDir.mark_finished`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np

from kflow import _keras_compat
from kflow.run import atomic_save, atomic_write_text
from kflow.training.callbacks import _writer

__all__ = ["ResumableBackup", "BackupState", "backup_state", "STATE_FILE", "METADATA_FILE"]

#: The state file, relative to the backup folder (the one source of truth).
STATE_FILE = "latest.state.npz"
#: A small marker written after the state file: `{"epoch": N, "stopped": bool}`.
METADATA_FILE = "training_metadata.json"

#: Public attributes of `keras.callbacks.EarlyStopping` that carry its state.
_EARLY_STOPPING_FIELDS = ("wait", "stopped_epoch", "best", "best_epoch")


class BackupState(NamedTuple):
    """What a backup holds: epochs done and whether training had stopped.

    Attributes:
        epochs_done: Completed epochs (the next epoch to train, 0-based).
        stopped: Whether training was stopped (early stopping, NaN guard)
            at the end of epoch `epochs_done`: no epoch is left to train.
    """

    epochs_done: int
    stopped: bool


def backup_state(backup_dir: str | os.PathLike[str]) -> BackupState | None:
    """Reads what a backup folder holds, without a model.

    The trainer uses it before `fit`: to cut `history.csv` back to
    `epochs_done` rows, to pass `initial_epoch=epochs_done`, and to skip
    training when `stopped` is true or `epochs_done` reached the epochs asked
    for (the run was killed after training, e.g. during the final
    evaluation).

    Args:
        backup_dir: The folder given to `ResumableBackup`.

    Returns:
        A `BackupState`, or `None` when there is no backup.
    """
    meta = _read_meta(Path(backup_dir) / STATE_FILE)
    if meta is None:
        return None
    return BackupState(int(meta["epoch"]), bool(meta.get("stopped", False)))


def _read_meta(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return json.loads(str(f["meta"]))


def _pack(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, str]:
    """Arrays as one flat byte buffer plus its layout (~10x cheaper than one entry each)."""
    data = np.frombuffer(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays), np.uint8)
    return data, json.dumps([[a.dtype.str, list(a.shape)] for a in arrays])


def _unpack(data: np.ndarray, layout: str) -> list[np.ndarray]:
    values, offset = [], 0
    for dtype, shape in json.loads(layout):
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        values.append(data[offset:offset + size].view(dtype).reshape(shape))
        offset += size
    return values


def _python_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_random_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))


class ResumableBackup(keras.callbacks.Callback):
    """Backs up the whole training state every epoch; restores it exactly on resume.

    At the end of each epoch the values of `model.variables` (weights and
    random-generator states), `model.optimizer.variables`, the global random
    states and the state of `callbacks` are copied in one call (~1 ms) and
    written by a background thread, while the next epoch trains, as one
    file renamed into place (`latest.state.npz`; a kill leaves the previous
    or the new state, never half of one), then the small
    `training_metadata.json` marker. At the start of `fit` a backup found in
    `backup_dir` is restored and `fit` continues with the epoch after it; if
    training had already stopped or finished, no epoch runs.

    The callbacks whose state is saved must come *before* this one in the
    `fit` callback list, so that each epoch's backup holds their state after
    that epoch. Supported: `keras.callbacks.EarlyStopping` (and subclasses;
    their `wait`, `stopped_epoch`, `best`, `best_epoch` and `best_weights`),
    and any object with `get_resume_state() -> dict` (JSON-serializable)
    and `set_resume_state(state)` methods.

    Pass `initial_epoch=backup_state(backup_dir).epochs_done` to `fit` where
    you can (public API); the callback also sets it, as
    `keras.callbacks.BackupAndRestore` does, so it works as a drop-in too.
    The backup is kept when `fit` ends; delete the folder once the run's
    results are saved.

    Args:
        backup_dir: Folder for the backup.
        callbacks: Callbacks whose state is saved and restored with the
            model's. Defaults to `()`.

    Example:

    ```python
    stop = keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    backup = ResumableBackup("run/backup", callbacks=[stop])
    model.fit(x, y, validation_split=0.2, epochs=50, callbacks=[stop, backup])
    shutil.rmtree("run/backup")  # after saving the model and metrics
    ```
    """

    def __init__(self, backup_dir: str | os.PathLike[str], callbacks: Sequence[Any] = ()):
        super().__init__()
        self.backup_dir = str(backup_dir)
        self.callbacks = list(callbacks)
        self._state_path = os.path.join(self.backup_dir, STATE_FILE)
        self._metadata_path = os.path.join(self.backup_dir, METADATA_FILE)
        self._key = os.path.abspath(self._state_path)
        self._read = _writer.VariableReader()
        self._epochs_done = 0
        self._stopped_saved = False
        self._pending_callback_states: list[dict[str, Any]] | None = None

    # -- what is saved ------------------------------------------------------------------
    def _variables(self) -> list[Any]:
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        variables = list(self.model.variables)
        if optimizer is not None:
            variables += list(optimizer.variables)
        generator = _keras_compat.global_seed_generator(create=False)
        if generator is not None:
            variables.append(generator.state)
        return variables

    def _callback_states(self) -> list[dict[str, Any]]:
        states = []
        for cb in self.callbacks:
            if hasattr(cb, "get_resume_state"):
                states.append({"custom": cb.get_resume_state()})
            elif isinstance(cb, keras.callbacks.EarlyStopping):
                state = {k: getattr(cb, k, None) for k in _EARLY_STOPPING_FIELDS}
                state["best"] = None if state["best"] is None else float(state["best"])
                states.append(state)
            else:
                raise TypeError(
                    f"ResumableBackup cannot save the state of {type(cb).__name__}: give it "
                    "get_resume_state()/set_resume_state(), or leave it out of `callbacks`.")
        return states

    def _best_weights(self) -> list[np.ndarray]:
        """Early stoppers' best weights, concatenated (their counts are in the meta)."""
        arrays: list[np.ndarray] = []
        for cb in self.callbacks:
            if isinstance(cb, keras.callbacks.EarlyStopping) and not hasattr(
                    cb, "get_resume_state"):
                arrays += [np.asarray(w) for w in (cb.best_weights or [])]
        return arrays

    def _save(self, stopped: bool) -> None:
        variables = self._variables()
        values = self._read(variables)
        best = self._best_weights()
        np_state = np.random.get_state()
        meta = {
            "epoch": self._epochs_done,
            "stopped": stopped,
            "has_global_seed_generator": _keras_compat.global_seed_generator(
                create=False) is not None,
            "python_random": _python_random_state(),
            "numpy_random": [np_state[0], int(np_state[2]), int(np_state[3]),
                             float(np_state[4])],
            "callbacks": self._callback_states(),
            "best_weights": [len(cb.best_weights or []) if isinstance(
                cb, keras.callbacks.EarlyStopping) and not hasattr(cb, "get_resume_state")
                else 0 for cb in self.callbacks],
            "paths": [v.path for v in variables],
        }
        numpy_keys = np.array(np_state[1], dtype=np.uint32)
        marker = json.dumps({"epoch": self._epochs_done, "stopped": stopped})

        def write() -> None:  # the state first: the marker never runs ahead of it
            data, layout = _pack(values)
            best_data, best_layout = _pack(best)
            atomic_save(self._state_path, lambda p: np.savez(
                p, data=data, layout=np.array(layout), best=best_data,
                best_layout=np.array(best_layout), numpy_keys=numpy_keys,
                meta=np.array(json.dumps(meta))))
            atomic_write_text(self._metadata_path, marker)

        os.makedirs(self.backup_dir, exist_ok=True)
        _writer.start(self._key, write)

    # -- restoring ----------------------------------------------------------------------
    def _restore(self) -> None:
        _writer.finish(self._key)  # e.g. of a run that crashed in this process
        path = Path(self._state_path)
        if not path.is_file():
            return
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            values = _unpack(f["data"], str(f["layout"]))
            best = _unpack(f["best"], str(f["best_layout"]))
            numpy_keys = f["numpy_keys"]
        if meta["has_global_seed_generator"]:
            _keras_compat.global_seed_generator(create=True)
        variables = self._variables()
        # Auto-generated names (`adam_1`, ...) change between sessions: match shapes.
        if [tuple(x.shape) for x in values] != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"The backup in {self.backup_dir} does not match the model: "
                f"{len(values)} saved variables, {len(variables)} in the model, or "
                "different shapes. Delete the folder to start over.")
        for v, value in zip(variables, values, strict=True):
            v.assign(value)
        _set_python_random_state(meta["python_random"])
        name, pos, has_gauss, gauss = meta["numpy_random"]
        np.random.set_state((name, numpy_keys, pos, has_gauss, gauss))
        self._epochs_done = int(meta["epoch"])
        self._stopped_saved = bool(meta["stopped"])
        self._pending_callback_states = meta["callbacks"]
        self._best = best
        self._best_counts = meta["best_weights"]
        self._apply_callback_states()
        epochs = (self.params or {}).get("epochs")
        start = epochs if (self._stopped_saved and epochs is not None) else self._epochs_done
        _keras_compat.set_initial_epoch(self.model, start)

    def _apply_callback_states(self) -> None:
        states = self._pending_callback_states
        if states is None:
            return
        if len(states) != len(self.callbacks):
            raise ValueError(f"The backup in {self.backup_dir} holds the state of "
                             f"{len(states)} callbacks; {len(self.callbacks)} were given.")
        offset = 0
        for cb, state, count in zip(self.callbacks, states, self._best_counts, strict=True):
            if "custom" in state:
                cb.set_resume_state(state["custom"])
                continue
            for k in _EARLY_STOPPING_FIELDS:
                setattr(cb, k, state[k])
            cb.best_weights = [np.array(w) for w in self._best[offset:offset + count]] or None
            offset += count

    # -- Keras hooks --------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._epochs_done = 0
        self._stopped_saved = False
        self._pending_callback_states = None
        self._restore()

    def on_epoch_begin(self, epoch, logs=None):
        # A callback listed after this one reset its state in its own on_train_begin.
        self._apply_callback_states()
        self._pending_callback_states = None

    def on_epoch_end(self, epoch, logs=None):
        self._epochs_done = epoch + 1
        self._stopped_saved = bool(self.model.stop_training)
        self._save(stopped=self._stopped_saved)

    def on_train_end(self, logs=None):
        # No epoch ran (training had already ended): a callback listed after this one
        # reset its state in on_train_begin and needs it back for its on_train_end.
        self._apply_callback_states()
        self._pending_callback_states = None
        if self.model.stop_training and not self._stopped_saved:
            # Stopped by a callback listed after this one: record that no epoch is left.
            self._stopped_saved = True
            self._save(stopped=True)
        _writer.finish_all()  # also other callbacks' writes into `backup_dir`
        _keras_compat.set_initial_epoch(self.model, None)  # a later fit starts afresh
