"""Background writes for the per-epoch callbacks (backup, early-stopping state).

An epoch of a small model takes well under a second, so a callback copies
what it must save at the end of the epoch (a few ms) and hands the file
writing to a thread that runs while the next epoch trains. Writes with the
same key run one at a time, in order; `finish(key)` waits for the pending
one and re-raises its error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["start", "finish", "finish_all"]

_writers: dict[str, _Writer] = {}
_lock = threading.Lock()


class _Writer(threading.Thread):
    def __init__(self, write: Callable[[], None]):
        super().__init__(name="kflow-writer")  # not a daemon: finishes before exit
        self.write = write
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.write()
        except BaseException as e:  # re-raised by `finish`
            self.error = e


def finish(key: str) -> None:
    """Waits for the pending write of `key`, if any; re-raises its error."""
    with _lock:
        writer = _writers.pop(key, None)
    if writer is not None:
        writer.join()
        if writer.error is not None:
            raise writer.error


def start(key: str, write: Callable[[], None]) -> None:
    """Runs `write()` in a background thread, after the previous write of `key`."""
    finish(key)
    writer = _Writer(write)
    with _lock:
        _writers[key] = writer
    writer.start()


def finish_all() -> None:
    """Waits for every pending write (`kflow.train` calls it when `fit` returns or
    raises, before it reads the backup again); re-raises the first error."""
    with _lock:
        keys = list(_writers)
    errors = []
    for key in keys:
        try:
            finish(key)
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]
