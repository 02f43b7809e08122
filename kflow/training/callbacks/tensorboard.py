"""TensorBoard epoch scalars without TensorFlow ops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras

__all__ = ["EpochTensorBoard"]


class EpochTensorBoard(keras.callbacks.Callback):
    """Writes every epoch's logs as TensorBoard scalars, like `keras.callbacks.TensorBoard`.

    The same files as `keras.callbacks.TensorBoard(log_dir, write_graph=False)`
    writes with its defaults: `train/` and `validation/` event files with the
    scalars `epoch_<name>` at step `epoch` (`val_` prefixes dropped), plus
    `epoch_learning_rate`, and `evaluation_<name>_vs_iterations` after each
    validation. It builds the event records itself instead of running one
    eager `tf.summary.scalar` op per value (~0.5 ms each: ~7 ms per epoch
    once training insight adds its logs), so it costs ~0.3 ms per epoch.
    Each epoch's events are flushed to disk.

    Args:
        log_dir: The TensorBoard folder of the run.

    Example:

    ```python
    model.fit(x, y, validation_split=0.2, epochs=5,
              callbacks=[EpochTensorBoard("run/tensorboard")])
    ```
    """

    def __init__(self, log_dir: str | Path):
        super().__init__()
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}

    def _writer(self, name: str):
        if name not in self._writers:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            (self.log_dir / name).mkdir(parents=True, exist_ok=True)
            self._writers[name] = EventFileWriter(str(self.log_dir / name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        logs = dict(logs or {})
        optimizer = getattr(self.model, "optimizer", None)
        if "learning_rate" not in logs and optimizer is not None:
            optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # loss scaling
            try:
                logs["learning_rate"] = float(
                    keras.ops.convert_to_numpy(optimizer.learning_rate))
            except (AttributeError, TypeError, ValueError):
                pass
        values: dict[str, list[Any]] = {"train": [], "validation": []}
        for key, value in logs.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            name = "validation" if key.startswith("val_") else "train"
            tag = "epoch_" + (key[4:] if name == "validation" else key)
            values[name].append(Summary.Value(tag=tag, simple_value=value))
        now = time.time()
        for name, items in values.items():
            if items:
                writer = self._writer(name)
                writer.add_event(Event(wall_time=now, step=epoch, summary=Summary(value=items)))
                writer.flush()  # on disk even if the run crashes later

    def on_test_end(self, logs=None):
        """`evaluation_<name>_vs_iterations` after each validation, as Keras writes them."""
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        optimizer = getattr(self.model, "optimizer", None)
        if not logs or optimizer is None or not hasattr(optimizer, "iterations"):
            return
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        items = []
        for key, value in logs.items():
            try:
                items.append(Summary.Value(tag=f"evaluation_{key}_vs_iterations",
                                           simple_value=float(value)))
            except (TypeError, ValueError):
                continue
        if items:
            self._writer("validation").add_event(
                Event(wall_time=time.time(), step=step, summary=Summary(value=items)))

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
