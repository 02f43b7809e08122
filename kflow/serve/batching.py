"""Server-side batching: many concurrent requests, one model call.

Requests queue per (signature, input names, dtypes and inner shapes). A batch
runs when it holds `max_batch_size` rows, or when its oldest request has waited
`batch_timeout_micros`, and a batch thread is free; while all batch threads are
busy the queue keeps filling, so batches grow with the load by themselves. The
outputs are split back along the 0th dimension.

Where TF Serving would reject a request its batcher cannot take (scalar inputs,
inputs of different 0th sizes, more rows than `max_batch_size`), kflow runs it
on its own instead. A model whose outputs cannot be split by rows (no batch
dimension) is called per request from then on. If a batched call fails, each
request of the batch is retried alone, so one bad request never fails others.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

import numpy as np

from kflow.serve.config import BatchingOptions
from kflow.serve.status import Code, ServingError

__all__ = ["Batcher", "batch_rows"]

log = logging.getLogger("kflow.serve")

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"

Runner = Callable[[str, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def batch_rows(feeds: Mapping[str, np.ndarray]) -> int | None:
    """The shared 0th dimension of all feeds, or `None` if they do not share one."""
    rows = None
    for arr in feeds.values():
        if arr.ndim == 0 or arr.shape[0] < 1 or (rows is not None and arr.shape[0] != rows):
            return None
        rows = arr.shape[0]
    return rows


class _Item:
    __slots__ = ("feeds", "rows", "future", "enqueued")

    def __init__(self, feeds, rows, future, enqueued):
        self.feeds, self.rows, self.future, self.enqueued = feeds, rows, future, enqueued


class _Queue:
    __slots__ = ("items", "rows")

    def __init__(self):
        self.items: collections.deque[_Item] = collections.deque()
        self.rows = 0


class Batcher:
    """Batches calls of one servable.

    Args:
        run: `run(signature_name, feeds) -> outputs`, called in `executor`.
        options: :class:`BatchingOptions`.
        executor: Threads for model calls.
        on_batch: Called with the number of rows of every batch (metrics).
    """

    def __init__(self, run: Runner, options: BatchingOptions, executor: Executor,
                 on_batch: Callable[[int], None] | None = None):
        self._run = run
        self._opts = options
        self._executor = executor
        self._on_batch = on_batch or (lambda rows: None)
        self._queues: dict[tuple, _Queue] = {}
        self._queued_rows = 0
        self._capacity = options.max_batch_size * options.max_enqueued_batches
        self._slots = asyncio.Semaphore(options.num_batch_threads)
        self._wakeup = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._unsplittable: set[str] = set()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._schedule())

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, signature_name: str, feeds: Mapping[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
        """Runs one request, batched with others where possible."""
        loop = asyncio.get_running_loop()
        rows = batch_rows(feeds)
        if (rows is None or rows > self._opts.max_batch_size or self._closed
                or signature_name in self._unsplittable):
            return await loop.run_in_executor(self._executor, self._run, signature_name, feeds)
        if self._queued_rows + rows > self._capacity:
            raise ServingError(Code.UNAVAILABLE, QUEUE_FULL)
        key = (signature_name,
               tuple(sorted((n, a.dtype.str, a.shape[1:]) for n, a in feeds.items())))
        item = _Item(feeds, rows, loop.create_future(), loop.time())
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        queue.items.append(item)
        queue.rows += rows
        self._queued_rows += rows
        self._wakeup.set()
        return await item.future

    async def close(self) -> None:
        """Runs what is queued, then stops."""
        self._closed = True
        self._wakeup.set()
        await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # ------------------------------------------------------------------ scheduling

    def _oldest(self) -> tuple[tuple, _Queue] | None:
        best = None
        for key, queue in self._queues.items():
            if best is None or queue.items[0].enqueued < best[1].items[0].enqueued:
                best = (key, queue)
        return best

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self._opts.batch_timeout_micros / 1e6
        max_rows = self._opts.max_batch_size
        while True:
            picked = self._oldest()
            if picked is None:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, queue = picked
            deadline = queue.items[0].enqueued + timeout
            while queue.rows < max_rows and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()
            batch, rows = [], 0
            while queue.items and rows + queue.items[0].rows <= max_rows:
                item = queue.items.popleft()
                queue.rows -= item.rows
                self._queued_rows -= item.rows
                if not item.future.done():  # skip requests that timed out meanwhile
                    batch.append(item)
                    rows += item.rows
            if not queue.items:
                self._queues.pop(key, None)
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._execute(key[0], batch, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, signature_name: str, batch: list[_Item], rows: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            if len(batch) == 1:
                await self._run_alone(signature_name, batch[0])
                return
            names = list(batch[0].feeds)
            feeds = {n: np.concatenate([it.feeds[n] for it in batch]) for n in names}
            size = rows
            if self._opts.allowed_batch_sizes:
                sizes = self._opts.allowed_batch_sizes
                size = sizes[bisect.bisect_left(sizes, rows)]
                if size > rows:  # pad with copies of the first row, dropped afterwards
                    feeds = {n: np.concatenate([a, np.repeat(a[:1], size - rows, axis=0)])
                             for n, a in feeds.items()}
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self._run, signature_name, feeds)
            except Exception as exc:  # noqa: BLE001 - isolate the request that failed
                log.debug("Batch of %d requests failed (%s); running them one by one.",
                          len(batch), exc)
                await self._run_each(signature_name, batch)
                return
            if any(o.ndim == 0 or o.shape[0] != size for o in outputs.values()):
                log.warning("Signature %s returns outputs without a batch dimension; its "
                            "requests will not be batched.", signature_name)
                self._unsplittable.add(signature_name)
                await self._run_each(signature_name, batch)
                return
            self._on_batch(rows)
            offset = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(
                        {n: o[offset:offset + item.rows] for n, o in outputs.items()})
                offset += item.rows
        finally:
            self._slots.release()

    async def _run_alone(self, signature_name: str, item: _Item) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                self._executor, self._run, signature_name, item.feeds)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            if not item.future.done():
                item.future.set_exception(exc)
            return
        self._on_batch(item.rows)
        if not item.future.done():
            item.future.set_result(result)

    async def _run_each(self, signature_name: str, batch: list[_Item]) -> None:
        for item in batch:
            if not item.future.done():
                await self._run_alone(signature_name, item)
