"""Choosing the `tf.distribute` strategy a run trains under, and what must be set
before TensorFlow starts its devices (the CPU split, op thread pools)."""

from __future__ import annotations

import logging

from kflow.errors import ConfigError, did_you_mean

__all__ = ["STRATEGIES", "resolve_strategy", "describe_strategy", "split_cpu",
           "configure_tensorflow_threads"]

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
log = logging.getLogger("kflow")


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Sets TensorFlow's op thread pools (0 leaves TensorFlow's choice).

    Raises:
        ConfigError: A count is negative, or TensorFlow already runs with other
            settings (they can only be set before its first op).
    """
    for value, flag in ((intra_op, "intra"), (inter_op, "inter")):
        if value < 0:
            raise ConfigError(f"--tensorflow-{flag}-op-parallelism must be >= 0 (0: "
                              f"TensorFlow decides). Got {value}.")
    if not intra_op and not inter_op:
        return
    import tensorflow as tf

    for value, getter, setter, flag in (
            (intra_op, tf.config.threading.get_intra_op_parallelism_threads,
             tf.config.threading.set_intra_op_parallelism_threads, "intra"),
            (inter_op, tf.config.threading.get_inter_op_parallelism_threads,
             tf.config.threading.set_inter_op_parallelism_threads, "inter")):
        if not value or getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError:
            raise ConfigError(
                f"TensorFlow already started with {getter()} {flag}-op threads; "
                f"--tensorflow-{flag}-op-parallelism {value} must be set before it "
                "runs its first op.") from None


def split_cpu(devices: int) -> None:
    """Splits the CPU into `devices` logical devices, so `MirroredStrategy` has replicas.

    This is how the tests train with several replicas on a machine without
    GPUs, and what `kflow --devices N` does: `--strategy mirrored` then
    trains on N replicas, each with its share of every batch (the numbers
    match single-device training; it is not faster on one CPU). Must be
    called before TensorFlow initializes its devices, i.e. before the first
    op, `tf.config.list_logical_devices()` or model is created.

    Args:
        devices: Number of logical CPU devices, >= 1.

    Raises:
        ConfigError: If `devices` is not a positive int, or TensorFlow's
            devices are already initialized with another split.

    Example:

    ```python
    from kflow.training.strategy import split_cpu

    split_cpu(2)  # first thing, before any TensorFlow op
    run = kflow.train("digits-mlp", strategy="mirrored")  # "MirroredStrategy on 2 replicas"
    ```
    """
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(f"devices must be an int >= 1. Got {devices!r} instead.")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if len(current or [None]) == devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise ConfigError(
            f"Cannot split the CPU into {devices} logical devices: TensorFlow already "
            f"initialized its devices ({have} logical CPU{'s' if have != 1 else ''}). "
            "Split it before any TensorFlow op runs."
        ) from None


def _find_tpu():
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None


def resolve_strategy(name: str = "auto"):
    """Returns a `tf.distribute.Strategy` for `name`.

    Args:
        name: "auto" (TPU if found, else MirroredStrategy over all GPUs when
            more than one is visible, else the default strategy), "default",
            "mirrored" (all visible GPUs, or all logical CPUs when there are
            no GPUs: one replica unless the CPU was split with `split_cpu`
            or `kflow --devices N`), "tpu", or "multi_worker" (reads
            `TF_CONFIG`).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(
            f"Unknown strategy '{name}'{did_you_mean(name, STRATEGIES)}. "
            f"Allowed: {', '.join(STRATEGIES)}."
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "tpu":
        resolver = _find_tpu()
        if resolver is None:
            raise ConfigError("strategy=tpu was requested but no TPU was found.")
        return tf.distribute.TPUStrategy(resolver)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices=devices)
    # auto
    if _tpu_visible():
        resolver = _find_tpu()
        if resolver is not None:
            return tf.distribute.TPUStrategy(resolver)
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_visible() -> bool:
    import os

    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
                or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"))


def describe_strategy(strategy) -> str:
    """A short human description: "MirroredStrategy on 2 replicas", "... on 1 replica"."""
    name = type(strategy).__name__
    if name.startswith("_Default"):
        return "default strategy, 1 device"
    n = strategy.num_replicas_in_sync
    return f"{name} on {n} replica{'' if n == 1 else 's'}"
