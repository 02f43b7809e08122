"""Resume after a crash: `BackupAndRestore` with atomic, double-buffered saves."""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from kflow.training.callbacks import _writer
from kflow.run import atomic_save, atomic_write_text

__all__ = ["ResumableBackup"]


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose saves are never half-written.

    Each epoch the weights, optimizer state and epoch counter are written
    to temporary files and renamed into `backup_dir`. Re-running the same
    training after a crash or Ctrl-C restores them and continues from the
    next epoch. The folder is removed when training finishes.

    Epochs of small models take well under a second, so the backup must be
    cheap: the values of `model.weights` and `model.optimizer.variables` are
    copied at the end of the epoch in one call (~1 ms) and written, as one
    flat buffer plus its layout in `latest.state.npz`, then the epoch
    counter, by a background thread while the next epoch trains.
    (`save_weights` walks the model to write HDF5: ~60 ms per epoch for
    `digits-cnn`.) A `latest.weights.h5` backup written by earlier versions
    still restores.

    Args:
        backup_dir: Folder for the backup.

    Example:

    ```python
    model.fit(x, y, epochs=50, callbacks=[ResumableBackup("run/backup")])
    ```
    """

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, save_freq="epoch", double_checkpoint=False,
                         delete_checkpoint=True)
        self._state_path = os.path.join(backup_dir, "latest.state.npz")
        self._key = os.path.abspath(self._state_path)
        self._read = _writer.VariableReader()

    def _state_variables(self) -> list:
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        return list(self.model.weights) + (list(optimizer.variables) if optimizer else [])

    def _load_model(self):
        _writer.finish(self._key)  # e.g. of a run that crashed in this process
        super()._load_model()  # epoch counter (and an older `latest.weights.h5`)
        if not os.path.isfile(self._state_path):
            return
        variables = self._state_variables()
        with np.load(self._state_path, allow_pickle=False) as f:
            data, layout = f["data"], json.loads(str(f["layout"]))
        values, offset = [], 0
        for _path, dtype, shape in layout:
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            values.append(data[offset:offset + size].view(dtype).reshape(shape))
            offset += size
        # Auto-generated names (`adam_1`, ...) change between sessions: match shapes.
        if [x.shape for x in values] != [tuple(v.shape) for v in variables]:
            raise ValueError(
                f"The backup in {self.backup_dir} does not match the model: "
                f"{len(values)} saved variables, {len(variables)} in the model, or "
                "different shapes."
            )
        for v, value in zip(variables, values, strict=True):
            v.assign(value)

    def _save_model(self):
        variables = self._state_variables()
        values = self._read(variables)
        paths = [v.path for v in variables]
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})

        def write():  # the state first: the epoch counter never runs ahead of it
            data = np.frombuffer(b"".join(np.ascontiguousarray(a).tobytes() for a in values),
                                 np.uint8)
            layout = json.dumps([[p, a.dtype.str, a.shape] for p, a in zip(paths, values,
                                                                          strict=True)])
            atomic_save(self._state_path,
                        lambda p: np.savez(p, data=data, layout=np.array(layout)))
            atomic_write_text(self._training_metadata_path, metadata)

        _writer.start(self._key, write)

    def on_train_end(self, logs=None):
        _writer.finish_all()  # also other callbacks' writes into `backup_dir`
        super().on_train_end(logs)
