"""Atomic file writes that follow the user's umask.

Every file kflow leaves behind (run files, exports, `models.config`) is
written to a temporary name in the same folder and renamed into place, so a
reader or a kill at any moment sees either the old file or the new one, never
half of it. The result gets the mode a plain `open(path, "w")` would give
(0644 under umask 022), not `tempfile`'s private 0600: a TF Serving process
under another user, or a colleague on a shared filesystem, can read it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_save", "current_umask",
           "file_mode"]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets under the current umask (0644 under 022)."""
    return 0o666 & ~current_umask()


def _write(path: str | Path, data: str | bytes, mode: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename.

    Args:
        path: The destination; its folder is created when missing.
        text: The file's full content.
    """
    _write(path, text, "w")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename."""
    _write(path, data, "wb")


def atomic_save(path: str | Path, save: Callable[[str], Any]) -> None:
    """Calls `save(tmp_path)` then renames the result to `path`.

    `tmp_path` keeps the suffix of `path` (Keras checks `.keras`/`.weights.h5`).
    The saved file gets the umask's mode, whatever `save` used.

    Example:

    ```python
    atomic_save("runs/x/model.keras", model.save)
    ```
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    tmp = path.parent / f".tmp-{os.getpid()}-{path.name.removesuffix(suffix)}{suffix}"
    try:
        save(str(tmp))
        if tmp.is_file():
            os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()
