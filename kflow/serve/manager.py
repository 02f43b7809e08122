"""Which versions are loaded, which serve, and how they change while serving.

The manager follows TF Serving's life cycle of a version (START, LOADING,
AVAILABLE, UNLOADING, END) and its version policies, with one rule stronger
than the default policy's: a version is only unloaded once the versions meant
to replace it are AVAILABLE (loaded and warmed up). So:

- a new version is loaded and warmed up beside the old one, then requests switch
  to it, and the old one is unloaded after its in-flight requests finish: no
  request fails during a version change;
- a version that fails to load is reported (state END with its error in the
  model status) and the version it was meant to replace keeps serving. It is
  retried when its directory changes.

All state changes happen on the event loop; loading runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from kflow.serve.batching import Batcher
from kflow.serve.config import ModelEntry, ServerOptions, load_model_entries, scan_versions
from kflow.serve.servable import Servable, version_fingerprint
from kflow.serve.status import Code, ServingError

__all__ = ["ModelManager", "VersionState", "Lease"]

log = logging.getLogger("kflow.serve")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclasses.dataclass(eq=False)
class VersionState:
    """One version of one model, as the model status reports it."""

    version: int
    path: Path
    state: str = START
    error: ServingError | None = None
    servable: Servable | None = None
    batcher: Batcher | None = None
    fingerprint: tuple = ()
    inflight: int = 0
    drained: asyncio.Event | None = None
    changed_at: float = dataclasses.field(default_factory=time.time)

    def set_state(self, state: str) -> None:
        self.state, self.changed_at = state, time.time()


@dataclasses.dataclass(eq=False)
class _Model:
    entry: ModelEntry
    versions: dict[int, VersionState] = dataclasses.field(default_factory=dict)
    on_disk: dict[int, Path] = dataclasses.field(default_factory=dict)
    serving: list[int] = dataclasses.field(default_factory=list)  # newest first
    removed: bool = False


class Lease:
    """A servable held for one request; the version is not unloaded before release."""

    __slots__ = ("model", "version", "_vs", "_released")

    def __init__(self, model: str, vs: VersionState):
        self.model, self.version, self._vs, self._released = model, vs.version, vs, False
        vs.inflight += 1

    @property
    def servable(self) -> Servable:
        return self._vs.servable

    @property
    def batcher(self) -> Batcher | None:
        return self._vs.batcher

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        vs = self._vs
        vs.inflight -= 1
        if vs.inflight == 0 and vs.drained is not None:
            vs.drained.set()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ModelManager:
    """Loads, serves, swaps and unloads the versions of every model.

    Args:
        base: The model base directory (or `None` with a config file).
        options: :class:`ServerOptions` (config file, polling, batching, warm-up).
        executor: Threads for model calls.
        on_batch: `on_batch(model, version, rows)` for the batch-size metric.
        on_load: `on_load(model, ok)` for the load metric.
    """

    def __init__(self, base: str | Path | None, options: ServerOptions, executor: Executor,
                 on_batch: Callable[[str, int, int], None] | None = None,
                 on_load: Callable[[str, bool], None] | None = None):
        self.base = Path(base).resolve() if base is not None else None
        self.options = options
        self._executor = executor
        self._load_pool = ThreadPoolExecutor(1, thread_name_prefix="kflow-load")
        self._on_batch = on_batch or (lambda m, v, r: None)
        self._on_load = on_load or (lambda m, ok: None)
        self._models: dict[str, _Model] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._config_file: Path | None = None
        self._config_stamp: tuple | None = None
        self._changing_stamp: tuple | None = None  # seen changed once, not yet applied
        self._refresh_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self.config_error: str | None = None

    @property
    def executor(self) -> Executor:
        """The threads that run model calls."""
        return self._executor

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Reads the config, loads the initial versions, starts polling."""
        entries, self._config_file = load_model_entries(self.base, self.options.model_config_file)
        self._config_stamp = self._stamp()
        self._apply_entries(entries)
        await self.refresh()
        if self.options.poll_seconds > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        """Stops polling and unloads everything (after in-flight requests)."""
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        async with self._refresh_lock:
            for model in self._models.values():
                model.serving = []
                for vs in model.versions.values():
                    if vs.state == AVAILABLE:
                        self._spawn(self._unload(model.entry.name, vs))
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._load_pool.shutdown(wait=False)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.poll_seconds)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - polling must survive anything
                log.exception("Polling the model base failed; will try again.")

    def _stamp(self) -> tuple | None:
        if self._config_file is None:
            return None
        try:
            st = self._config_file.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _reload_config(self) -> None:
        """Re-reads models.config when it changed (or re-discovers models under
        BASE without one); a broken new config keeps the old one in force.

        A changed file is read once it has stayed the same for one poll, so a
        file being written in place (truncated, then filled) is never read
        half-written: an empty moment would otherwise unload every model.
        """
        if self._config_file is not None:
            stamp = self._stamp()
            if stamp == self._config_stamp:
                self._changing_stamp = None
                return
            if stamp != self._changing_stamp:
                self._changing_stamp = stamp
                return
            self._config_stamp, self._changing_stamp = stamp, None
        elif self.options.model_config_file is not None:
            return
        try:
            entries, config_file = load_model_entries(self.base, self.options.model_config_file)
        except Exception as exc:  # noqa: BLE001 - keep serving with the old config
            self.config_error = str(exc)
            log.error("Ignoring the changed model config: %s", exc)
            return
        self.config_error = None
        if config_file is not None:
            self._config_file = config_file
        self._apply_entries(entries)

    def _apply_entries(self, entries: list[ModelEntry]) -> None:
        names = {e.name for e in entries}
        for name, model in self._models.items():
            if name not in names and not model.removed:
                log.info("Model %s is no longer configured; unloading it.", name)
                model.removed = True
        for entry in entries:
            model = self._models.get(entry.name)
            if model is None:
                self._models[entry.name] = _Model(entry)
            else:
                if model.entry != entry:
                    log.info("Configuration of model %s changed.", entry.name)
                model.entry, model.removed = entry, False
        self._labels = {e.name: dict(e.labels) for e in entries}

    async def refresh(self) -> None:
        """One poll: re-read the config, scan version directories, load what the
        policies aspire to (falling back to older versions when the newest fail
        to load), then swap and unload. Returns once loads are done."""
        async with self._refresh_lock:
            self._reload_config()
            loop = asyncio.get_running_loop()
            for model in list(self._models.values()):
                if model.removed:
                    model.on_disk = {}
                else:
                    model.on_disk = await loop.run_in_executor(
                        None, scan_versions, model.entry.base_path)
                for version, vs in model.versions.items():
                    # A failed version whose files changed is retried.
                    if (vs.state == END and vs.error is not None
                            and version in model.on_disk):
                        fingerprint = await loop.run_in_executor(
                            None, version_fingerprint, model.on_disk[version])
                        if fingerprint != vs.fingerprint:
                            vs.path, vs.error = model.on_disk[version], None
                            vs.set_state(START)
            # A failed load can call in an older version: plan again until stable
            # (bounded: each round fails at least one more version, or ends).
            for _ in range(1 + max((len(m.on_disk) for m in self._models.values()), default=0)):
                loads = []
                for model in list(self._models.values()):
                    for version in self._targets(model):
                        vs = model.versions.get(version)
                        path = model.on_disk[version]
                        if vs is None:
                            vs = model.versions[version] = VersionState(version, path)
                            loads.append(self._load(model, vs))
                        elif vs.state in (START, END) and vs.error is None:
                            vs.path = path
                            vs.set_state(START)
                            loads.append(self._load(model, vs))
                    self._update_serving(model)
                if not loads:
                    break
                results = await asyncio.gather(*loads)
                if all(results):
                    break

    @staticmethod
    def _failed(model: _Model, version: int) -> bool:
        vs = model.versions.get(version)
        return vs is not None and vs.state == END and vs.error is not None

    def _targets(self, model: _Model) -> list[int]:
        """The versions to load and serve, newest first: the policy's aspired
        versions and, for the `latest` policy, as many of the newest older
        versions on disk as there are aspired versions that failed to load (TF
        Serving's availability-preserving behaviour: when the newest version
        cannot load, the newest version that loads serves)."""
        if model.removed:
            return []
        entry = model.entry
        aspired = entry.aspired(list(model.on_disk))
        if entry.policy != "latest":
            return aspired
        missing = sum(1 for v in aspired if self._failed(model, v))
        if missing:
            older = (v for v in sorted(model.on_disk, reverse=True)
                     if v not in aspired and not self._failed(model, v))
            aspired = aspired + [v for _, v in zip(range(missing), older, strict=False)]
        return aspired

    async def _load(self, model: _Model, vs: VersionState) -> bool:
        """Loads and warms up one version; returns whether it is AVAILABLE."""
        name = model.entry.name
        loop = asyncio.get_running_loop()
        vs.set_state(LOADING)
        vs.fingerprint = await loop.run_in_executor(None, version_fingerprint, vs.path)
        # The base may hold symlinks (TF Serving follows them too): say where the
        # files really are.
        real = await loop.run_in_executor(None, os.path.realpath, vs.path)
        log.info("Loading model %s version %d from %s (resolved path: %s)", name, vs.version,
                 vs.path, real)
        started = time.perf_counter()
        try:
            servable = await loop.run_in_executor(
                self._load_pool, self._load_and_warm_up, name, vs.version, vs.path)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
            error = exc if isinstance(exc, ServingError) else ServingError(
                Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
            vs.error, vs.servable = error, None
            vs.set_state(END)
            self._on_load(name, False)
            log.error("Loading model %s version %d failed: %s", name, vs.version, error)
        else:
            vs.servable = servable
            if self.options.batching.enabled:
                vs.batcher = Batcher(
                    servable.run, self.options.batching, self._executor,
                    on_batch=lambda rows, n=name, v=vs.version: self._on_batch(n, v, rows))
            vs.set_state(AVAILABLE)
            self._on_load(name, True)
            log.info("Model %s version %d is available (loaded from %s and warmed up in "
                     "%.2fs).", name, vs.version, real, time.perf_counter() - started)
        self._update_serving(model)
        return vs.state == AVAILABLE

    def _load_and_warm_up(self, name: str, version: int, path: Path) -> Servable:
        servable = Servable.load(name, version, path)
        if self.options.warmup:
            servable.warm_up()
        return servable

    def _update_serving(self, model: _Model) -> None:
        """Routes requests to the target versions that are AVAILABLE and unloads
        the rest. For the `latest` policy, older versions still on disk fill in
        for targets that are not available yet (loading). As TF Serving's
        availability-preserving policy, while no target is available the newest
        available version keeps serving, even once its directory is gone; once
        nothing is aspired at all (model removed, every version deleted), it is
        unloaded."""
        entry = model.entry
        available = {v for v, vs in model.versions.items() if vs.state == AVAILABLE}
        targets = self._targets(model)
        serving = [v for v in targets if v in available]
        if entry.policy == "latest" and len(serving) < entry.num_versions:
            older = sorted((v for v in available if v in model.on_disk and v not in serving),
                           reverse=True)
            serving += older[: entry.num_versions - len(serving)]
        if not serving and targets and available:
            serving = [max(available)]
        model.serving = sorted(serving, reverse=True)
        for version in sorted(available - set(serving)):
            self._spawn(self._unload(entry.name, model.versions[version]))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unload(self, name: str, vs: VersionState) -> None:
        vs.set_state(UNLOADING)
        if vs.inflight:
            vs.drained = asyncio.Event()
            await vs.drained.wait()
        if vs.batcher is not None:
            await vs.batcher.close()
        vs.batcher, vs.servable, vs.drained = None, None, None
        vs.set_state(END)
        log.info("Model %s version %d unloaded.", name, vs.version)

    # ------------------------------------------------------------------ requests

    def is_configured(self, name: str) -> bool:
        """Whether `name` is a model of the current configuration."""
        model = self._models.get(name)
        return model is not None and not model.removed

    def model_names(self) -> list[str]:
        return sorted(n for n, m in self._models.items() if not m.removed)

    def resolve_label(self, name: str, label: str) -> int:
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise ServingError.invalid_argument(f"Unrecognized servable version label: {label}")
        return version

    def lease(self, name: str, version: int | None = None, label: str | None = None) -> Lease:
        """The servable answering a request for `name` (latest), a version or a label.

        Raises:
            ServingError: 404 "Servable not found for request: ..." as TF Serving.
        """
        if label is not None:
            version = self.resolve_label(name, label)
        model = self._models.get(name)
        serving = model.serving if model is not None and not model.removed else []
        if version is None:
            if serving:
                return Lease(name, model.versions[serving[0]])
            raise ServingError.not_found(f"Servable not found for request: Latest({name})")
        if version in serving:
            return Lease(name, model.versions[version])
        raise ServingError.not_found(
            f"Servable not found for request: Specific({name}, {version})")

    def version_states(self, name: str, version: int | None = None,
                       label: str | None = None) -> list[VersionState]:
        """Versions for the model status API, newest first.

        A `label` selects its version when it names one the model has; otherwise
        every version is listed, as TF Serving (whose status ignores labels).

        Raises:
            ServingError: 404 "Could not find any versions of model ..." /
                "Could not find version V of model ..." as TF Serving.
        """
        model = self._models.get(name)
        versions = model.versions if model is not None else {}
        if label is not None:
            # TF Serving's status ignores the label (GetModelStatusWithModelSpec reads
            # only the version): an unknown label, or one whose version is unknown,
            # lists every version with TF Serving's status code; a known one lists
            # its version.
            labelled = self._labels.get(name, {}).get(label)
            version = labelled if labelled in versions else None
        if version is not None:
            if version not in versions:
                raise ServingError.not_found(f"Could not find version {version} of model {name}")
            return [versions[version]]
        if not versions:
            raise ServingError.not_found(f"Could not find any versions of model {name}")
        return [versions[v] for v in sorted(versions, reverse=True)]

    def snapshot(self) -> dict[str, dict[int, VersionState]]:
        """Every model's version states (for metrics and logs)."""
        return {name: dict(m.versions) for name, m in self._models.items()}

    def queued_rows(self) -> dict[tuple[str, str], float]:
        out = {}
        for name, model in self._models.items():
            for v, vs in model.versions.items():
                if vs.batcher is not None:
                    out[(name, str(v))] = float(vs.batcher.queued_rows)
        return out

    def serving_versions(self) -> dict[str, list[int]]:
        return {name: list(m.serving) for name, m in self._models.items() if not m.removed}
