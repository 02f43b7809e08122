"""The garbage collector's settings for a process kflow owns (a CLI command, a server).

CPython starts a young-generation collection whenever the number of live
container objects (lists, dicts, futures, tensors' Python wrappers...) has
grown by 700 since the last one; every tenth also walks the middle
generation, and from time to time one walks *every* object of the process.
With TensorFlow and Keras imported that is ~400k objects: 0.15-0.4 s per full
collection, during which nothing else runs.

Two places pay for it:

* Start-up: importing TensorFlow and Keras, building a model and tracing its
  functions allocate millions of objects, so `kflow train digits-mlp` ran 8
  full collections (1.17 s) before its 12 epochs ended.
* Serving: with 32 requests in flight a server holds a few thousand objects
  that all die within milliseconds, so with the default the collector ran every
  few requests: 3,177 young, 289 middle and 7 full collections in 15 s of load
  (2.6 s, ~130 us per request, and the p99 spikes), none of which found
  garbage: a request's objects are freed by reference counting as soon as it
  is answered.

A young threshold of 20,000 removes both (0 full collections in either case).
Cycles stay collectable (a collection still runs once 20,000 objects have
accumulated), unlike `gc.disable()`; and unlike `gc.freeze()` the objects of a
model version that a server unloads later stay collectable.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["PROCESS_GC_THRESHOLDS", "tuned_gc"]

# (young, middle, old): the young threshold is ~100x what 32 in-flight requests
# or one training step hold at once; the other two keep CPython's defaults.
PROCESS_GC_THRESHOLDS = (20_000, 10, 10)


@contextlib.contextmanager
def tuned_gc() -> Iterator[tuple[int, int, int]]:
    """Sets the collector's thresholds to :data:`PROCESS_GC_THRESHOLDS` for the
    duration of a command, then restores the previous ones.

    Used by the `kflow` command line and `kflow serve` (`run_server`), which own
    their process; the Python API (`kflow.train`, `ServerThread`) leaves the
    calling program's settings alone.

    Yields:
        The thresholds before the call.

    Example:

    ```python
    with tuned_gc():
        run_the_command()
    ```
    """
    previous = gc.get_threshold()
    gc.set_threshold(*PROCESS_GC_THRESHOLDS)
    try:
        yield previous
    finally:
        gc.set_threshold(*previous)
