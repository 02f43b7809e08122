"""The garbage collector's settings for a serving process.

CPython starts a young-generation collection whenever the number of live
container objects (lists, dicts, futures, coroutines...) has grown by 700 since
the last one. A server with 32 requests in flight holds a few thousand such
objects that all die within milliseconds, so with the default the collector
runs every few requests; every tenth of those collections also walks the
middle generation, and every hundredth walks *every* object of the process
(TensorFlow and the loaded models: ~400k objects, 0.2-0.4 s during which no
request is answered). None of it finds garbage: a request's objects are freed
by reference counting the moment it is answered.

Measured with `benchmarks/bench_serving.py` on digits-cnn at 32 clients: 3,177
young, 289 middle and 7 full collections in 15 s of load, 2.6 s spent in them
(~130 us per request, and the p99 spikes); with a first threshold of 20,000,
none at all.

Raising the first threshold keeps cycles collectable (a collection still runs
once 20,000 objects have accumulated, e.g. while a large request body is read
into nested lists), unlike `gc.disable()`; and unlike `gc.freeze()` the
objects of a model version that is later unloaded stay collectable.
"""

from __future__ import annotations

import gc

__all__ = ["SERVING_GC_THRESHOLDS", "tune_gc_for_serving"]

# (young, middle, old): the young threshold is ~100x what 32 in-flight requests
# hold at once; the other two keep CPython's defaults.
SERVING_GC_THRESHOLDS = (20_000, 10, 10)


def tune_gc_for_serving() -> tuple[int, int, int]:
    """Sets the collector's thresholds for a serving process.

    Called by `kflow serve` (`run_server`), which owns its process; a server
    started inside another program (`ServerThread`) leaves that program's
    settings alone.

    Returns:
        The thresholds before the call, to restore them with
        `gc.set_threshold(*previous)`.

    Example:

    ```python
    previous = tune_gc_for_serving()
    ...  # serve
    gc.set_threshold(*previous)
    ```
    """
    previous = gc.get_threshold()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
    return previous
