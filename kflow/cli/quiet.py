"""TensorFlow without its C++ noise on the command line (unless --debug).

Two sources of noise reach a terminal through file descriptor 2, below
Python's `sys.stderr`:

- start-up lines (oneDNN, CUDA probing), written before TensorFlow's
  logging can be configured: `import_tensorflow_quietly` imports TensorFlow
  with descriptor 2 sent to /dev/null;
- harmless errors of graph optimizers while training, e.g. grappler's
  `E0000 ... tfg_optimizer_hook.cc:135] tfg_optimizer{...} failed:
  INVALID_ARGUMENT: Node ... has an empty op name` (the graph then runs
  unoptimized, with the same results): `filter_stderr` drops the lines that
  match `NOISE` and passes every other line through unchanged.

The filter runs in a small child process that reads what the command writes
to descriptor 2, so nothing is lost when the command crashes or aborts: a
real error, a Python traceback or a TensorFlow `F`-level check failure
always reaches the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["import_tensorflow_quietly", "filter_stderr", "NOISE", "NO_DRIVER_NOISE", "active_noise",
           "is_noise"]

#: Regular expressions of stderr lines that are dropped (matched with `re.search`).
#: A line starting with a tab right after a dropped line (TensorFlow's
#: continuation of a message) is dropped with it.
NOISE = (
    # Grappler's MLIR (TFG) hook failing on a graph it cannot import; it falls back
    # to the unoptimized graph, so nothing changes but the log line.
    r"^[IWE]\d{4} [\d:. ]+\d+ tfg_optimizer_hook\.cc:\d+\] tfg_optimizer\{.*\} failed: ",
    # A grappler optimizer pass giving up on a graph (same fallback).
    r"^[IWE]\d{4} [\d:. ]+\d+ meta_optimizer\.cc:\d+\] .* failed: ",
    # absl's note that it logs to stderr before being initialized.
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR$",
    # A graph written by a newer op registry than the runtime's: tf.data's own map
    # attribute, which the runtime ignores as the message says.
    r"^[IWE]\d{4} [\d:. ]+\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute "
    r"use_unbounded_threadpool which is not in the op definition",
)

#: CUDA probing failing on a machine that has no NVIDIA driver at all (the devices
#: start after the quiet import when a multi-worker strategy must be created first).
#: Dropped only there: on a machine with a driver it is the one line that explains
#: why the GPU is not used.
NO_DRIVER_NOISE = (r"^E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ",)


def has_nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA kernel driver (its control device node)."""
    return os.path.exists("/dev/nvidiactl")


def active_noise(driver: bool | None = None) -> tuple[str, ...]:
    """The patterns `filter_stderr` drops on this machine (or on one with/without a driver)."""
    driver = has_nvidia_driver() if driver is None else driver
    return NOISE if driver else NOISE + NO_DRIVER_NOISE


def is_noise(line: str, driver: bool | None = None) -> bool:
    """Whether `filter_stderr` drops this line (without its newline).

    Args:
        line: One stderr line without its newline.
        driver: Judge as on a machine with (`True`) or without (`False`) an NVIDIA
            driver. Defaults to `None`: this machine.
    """
    return any(re.search(p, line) for p in active_noise(driver))


# The filter process: no imports beyond os/re/signal, so it starts in ~10 ms.
_FILTER = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the command reports it, we forward
noise = [re.compile(p) for p in sys.argv[1:]]
out, buf, dropping = 1, b"", False

def emit(line):
    global dropping
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    if (dropping and text.startswith("\t")) or any(p.search(text) for p in noise):
        dropping = True
        return
    dropping = False
    while line:
        try:
            line = line[os.write(out, line):]
        except InterruptedError:
            continue
        except OSError:
            return

while True:
    try:
        chunk = os.read(0, 65536)
    except InterruptedError:
        continue
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for line in lines:
        emit(line + b"\n")
if buf:
    emit(buf)
"""


@contextlib.contextmanager
def filter_stderr(wait: float = 5.0) -> Iterator[None]:
    """Drops TensorFlow's noise lines (`NOISE`) from file descriptor 2 while active.

    Everything written to descriptor 2 (by Python, TensorFlow's C++ code or
    child processes) goes through a filter process to the original stderr;
    lines matching `NOISE` are dropped, the others pass in order. On exit
    the original descriptor is restored and the filter drains what is left
    (waiting at most `wait` seconds for child processes that still hold
    the pipe). When descriptor 2 cannot be redirected, nothing is filtered.

    Args:
        wait: Seconds to wait for the filter to drain on exit. Defaults to 5.

    Example:

    ```python
    with filter_stderr():
        model.fit(x, y)  # no "E0000 ... empty op name" lines
    ```
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        read_end, write_end = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-E", "-c", _FILTER, *active_noise()],
            stdin=read_end, stdout=saved, stderr=subprocess.DEVNULL, close_fds=True,
        )
    except OSError:
        os.close(saved)
        yield
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes our last write end of the pipe: the filter sees EOF
        os.close(saved)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:  # a child process still writes: let it
            pass


def import_tensorflow_quietly(devices: int | None = None,
                              op_threads: tuple[int, int] = (0, 0)) -> None:
    """Imports TensorFlow and Keras with file descriptor 2 sent to /dev/null.

    TensorFlow's C++ start-up messages (oneDNN, CUDA probing) are written
    before its logging can be configured, so environment variables cannot
    silence them. If the import fails it is retried with stderr visible.

    Args:
        devices: Split the CPU into this many logical devices before
            TensorFlow initializes its devices (`kflow --devices N`; see
            `kflow.training.strategy.split_cpu`). Defaults to `None` (no
            split).
        op_threads: TensorFlow's intra-op and inter-op thread counts, set
            before its devices start (0: TensorFlow decides). Defaults to
            `(0, 0)`.
    """
    if "tensorflow" not in sys.modules:
        with _quiet_fd2():
            try:
                import keras  # noqa: F401
                import tensorflow  # noqa: F401
            except Exception:  # noqa: BLE001 - re-raised below with stderr visible
                pass
    import tensorflow as tf  # raises with a visible message if broken

    with _quiet_fd2():  # device probing also logs
        configure_before_devices(devices, op_threads)  # errors: reported once stderr is back
        if not os.environ.get("TF_CONFIG") and "SLURM_PROCID" not in os.environ:
            # A multi-worker strategy must be created before the devices start.
            tf.config.list_logical_devices()


def configure_before_devices(devices: int | None = None,
                             op_threads: tuple[int, int] = (0, 0)) -> None:
    """What must be set before TensorFlow's devices start: op threads, the CPU split.

    Args:
        devices: Logical CPU devices (`kflow.training.strategy.split_cpu`);
            `None`: no split.
        op_threads: Intra-op and inter-op thread counts (0: TensorFlow decides).
    """
    if any(op_threads):
        from kflow.training.strategy import configure_tensorflow_threads

        configure_tensorflow_threads(*op_threads)
    if devices is not None:
        from kflow.training.strategy import split_cpu

        split_cpu(devices)


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_stderr(debug: bool = False) -> contextlib.AbstractContextManager[None]:
    """File descriptor 2 sent to /dev/null (TensorFlow's C++ start-up lines), unless `debug`."""
    return contextlib.nullcontext() if debug else _quiet_fd2()
