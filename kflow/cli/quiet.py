"""Importing TensorFlow without its start-up log lines (unless --debug)."""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and Keras with file descriptor 2 sent to /dev/null.

    TensorFlow's C++ start-up messages (oneDNN, CUDA probing) are written
    before its logging can be configured, so environment variables cannot
    silence them. If the import fails it is retried with stderr visible.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_logical_devices()  # device probing also logs
        except Exception:  # noqa: BLE001 - re-raised below with stderr visible
            pass
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    import tensorflow  # noqa: F401  (raises with a visible message if broken)
