"""The TF Serving model base: `BASE/NAME/VERSION/`, `BASE/models.config`, atomic publishing.

TensorFlow Serving polls `BASE/NAME/` and loads every child directory whose
name is a number. A version therefore must never be visible half-written:
kflow writes it into a hidden staging directory beside it (same file system),
fsyncs every file and directory, and renames it into place. Replacing a
version (`overwrite=True`) swaps the two directories in one `renameat2`
call where the kernel offers it, else with two renames.

`models.config` lists every model of the base in TF Serving's text format
(`ModelServerConfig` from `tensorflow-serving-api`), with base paths as the
server sees them (`/models/NAME` when the base is mounted at `/models`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kflow.errors import ConfigError
from kflow.export.errors import BaseNotWritableError, ExportError, VersionExistsError

__all__ = [
    "ModelBase",
    "MODELS_CONFIG",
    "read_models_config",
    "models_config_text",
    "fsync_tree",
    "require_serving_api",
]

MODELS_CONFIG = "models.config"
STAGING_PREFIX = ".kflow-staging-"
REPLACED_PREFIX = ".kflow-replaced-"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def require_serving_api() -> None:
    """Raises a one-line `ExportError` when `tensorflow-serving-api` is missing."""
    try:
        import tensorflow_serving.config.model_server_config_pb2  # noqa: F401
    except ImportError:
        raise ExportError(
            "Exporting to a TF Serving model base needs the tensorflow-serving-api package: "
            "pip install 'kflow[serving]' (or tensorflow-serving-api==<your TF version>)."
        ) from None


def fsync_tree(root: str | Path) -> None:
    """fsyncs every file and directory under `root` (and `root` itself)."""
    root = Path(root)
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def models_config_text(entries: list[dict[str, Any]]) -> str:
    """`ModelServerConfig` text for `[{"name", "base_path", ...}]`, via the real proto."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    cfg = model_server_config_pb2.ModelServerConfig()
    for entry in entries:
        c = cfg.model_config_list.config.add()
        c.name = entry["name"]
        c.base_path = entry["base_path"]
        c.model_platform = entry.get("model_platform", "tensorflow")
    return text_format.MessageToString(cfg)


def read_models_config(path: str | Path) -> Any:
    """Parses a `models.config` file into a `ModelServerConfig` proto.

    Raises:
        ExportError: The file is not valid TF Serving text format.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    cfg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(Path(path).read_text(), cfg)
    except text_format.ParseError as exc:
        raise ExportError(f"'{path}' is not a valid TF Serving models.config: {exc}") from None
    return cfg


class ModelBase:
    """A TF Serving model base directory.

    Args:
        path: The base directory (created when missing).
        serving_root: Where the server sees the base, for the base paths in
            `models.config`. Defaults to "/models" (the official image's
            convention: `-v BASE:/models`).
    """

    def __init__(self, path: str | Path, serving_root: str = "/models"):
        self.path = Path(path)
        self.serving_root = serving_root.rstrip("/") or "/"

    # -- names and versions ------------------------------------------------------
    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                f"Model name {name!r} is not usable in a model base: use letters, digits, "
                "'_', '-' and '.', starting with a letter or digit (e.g. --name digits)."
            )
        return name

    def model_dir(self, name: str) -> Path:
        return self.path / self.check_name(name)

    def versions(self, name: str) -> list[int]:
        """The published versions of `name`, sorted."""
        d = self.model_dir(name)
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())

    def next_version(self, name: str) -> int:
        """One more than the highest published version (1 for a new model)."""
        versions = self.versions(name)
        return versions[-1] + 1 if versions else 1

    def models(self) -> list[str]:
        """Every model of the base: sub-directories holding a numeric version with a model."""
        if not self.path.is_dir():
            return []
        names = []
        for d in sorted(self.path.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and any(
                v.is_dir() and v.name.isdigit() and (
                    (v / "saved_model.pb").is_file() or (v / "saved_model.pbtxt").is_file())
                for v in d.iterdir()
            ):
                names.append(d.name)
        return names

    # -- checks --------------------------------------------------------------------
    def check_writable(self, name: str) -> None:
        """Creates the base if needed and writes a probe file in it (and in `BASE/NAME`
        when that exists); raises a one-line `BaseNotWritableError` if it can't."""
        d = self.model_dir(name)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for folder in (self.path, d) if d.is_dir() else (self.path,):
                probe = folder / f".kflow-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                probe.write_text("")
                probe.unlink()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise BaseNotWritableError(
                f"Model base '{self.path}' is not writable ({reason}: "
                f"'{exc.filename or self.path}'); choose another --base or fix its permissions."
            ) from None

    def remove_if_empty(self, name: str) -> None:
        """Removes `BASE/NAME` if it holds no version (after a failed first export)."""
        d = self.model_dir(name)
        if d.is_dir() and not self.versions(name) and not any(
                p.name.startswith(STAGING_PREFIX) for p in d.iterdir()):
            shutil.rmtree(d, ignore_errors=True)

    def check_version(self, name: str, version: int, overwrite: bool) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"--version must be a positive integer. Got {version!r} instead.")
        if (self.model_dir(name) / str(version)).exists() and not overwrite:
            raise VersionExistsError(
                f"Version {version} of model '{name}' already exists in '{self.path}'; "
                f"pass --overwrite to replace it, or leave out --version to publish "
                f"version {self.next_version(name)}."
            )

    # -- writing -------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock on `BASE/NAME` while choosing and publishing a version."""
        import fcntl

        d = self.model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(d / ".kflow-export.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def clean_stale(self, name: str) -> list[Path]:
        """Removes staging directories left by exports whose process is gone."""
        removed = []
        d = self.model_dir(name)
        if not d.is_dir():
            return removed
        for p in d.iterdir():
            if p.is_dir() and p.name.startswith((STAGING_PREFIX, REPLACED_PREFIX)):
                parts = p.name.split("-")
                pid = next((int(s) for s in parts if s.isdigit() and s != "0"), None)
                if pid is None or (pid != os.getpid() and not _pid_alive(pid)):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        return removed

    def staging_dir(self, name: str, version: int) -> Path:
        """A fresh hidden directory in `BASE/NAME` (TF Serving ignores non-numeric names)."""
        tag = f"v{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        d = self.model_dir(name) / f"{STAGING_PREFIX}{tag}"
        d.mkdir(parents=True)
        return d

    def publish(self, staging: Path, name: str, version: int, overwrite: bool = False) -> Path:
        """fsyncs `staging` and renames it to `BASE/NAME/VERSION` in one step.

        Raises:
            VersionExistsError: The version appeared meanwhile and `overwrite` is off.
        """
        target = self.model_dir(name) / str(version)
        fsync_tree(staging)
        if target.exists():
            if not overwrite:
                raise VersionExistsError(
                    f"Version {version} of model '{name}' was published by someone else "
                    "during this export; nothing was overwritten."
                )
            if _exchange(staging, target):
                # `staging` now holds the replaced version.
                _fsync_dir(target.parent)
                shutil.rmtree(staging, ignore_errors=True)
                return target
            old = target.parent / f"{REPLACED_PREFIX}v{version}-{os.getpid()}"
            os.rename(target, old)
            os.rename(staging, target)
            _fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
            return target
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return target

    def write_models_config(self) -> Path:
        """(Re)writes `BASE/models.config` to list every model of the base.

        Entries already in the file keep their settings (version policy,
        labels...); models found in the base are added with base path
        `SERVING_ROOT/NAME`; entries of this base whose model is gone are
        dropped. The text is checked by parsing it back with the real proto.
        """
        from google.protobuf import text_format
        from tensorflow_serving.config import model_server_config_pb2

        from kflow.run import atomic_write_text

        path = self.path / MODELS_CONFIG
        cfg = (read_models_config(path) if path.is_file()
               else model_server_config_pb2.ModelServerConfig())
        present = self.models()
        ours = {f"{self.serving_root}/{n}".replace("//", "/"): n for n in present}
        kept = model_server_config_pb2.ModelServerConfig()
        seen = set()
        for c in cfg.model_config_list.config:
            mine = c.base_path.startswith(self.serving_root.rstrip("/") + "/")
            gone = mine and c.base_path not in ours and c.name not in present
            if gone or c.name in seen:
                continue
            kept.model_config_list.config.add().CopyFrom(c)
            seen.add(c.name)
        for base_path, n in ours.items():
            if n not in seen:
                c = kept.model_config_list.config.add()
                c.name, c.base_path, c.model_platform = n, base_path, "tensorflow"
                seen.add(n)
        text = text_format.MessageToString(kept)
        check = model_server_config_pb2.ModelServerConfig()
        text_format.Parse(text, check)
        atomic_write_text(path, text)
        return path
