"""Resume after a crash: `BackupAndRestore` with atomic, double-buffered saves."""

from __future__ import annotations

import json

import keras

from kflow.train.run_dir import atomic_save, atomic_write_text

__all__ = ["ResumableBackup"]


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose saves are never half-written.

    Each epoch the weights, optimizer state and epoch counter are written
    to temporary files and renamed into `backup_dir`. Re-running the same
    training after a crash or Ctrl-C restores them and continues from the
    next epoch. The folder is removed when training finishes.

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

    def _save_model(self):
        atomic_save(self._weights_path, lambda p: self.model.save_weights(p, overwrite=True))
        atomic_write_text(
            self._training_metadata_path,
            json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}),
        )
