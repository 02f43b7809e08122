"""Choosing the `tf.distribute` strategy a run trains under."""

from __future__ import annotations

import logging

from kflow.errors import ConfigError, did_you_mean

__all__ = ["STRATEGIES", "resolve_strategy", "describe_strategy"]

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
log = logging.getLogger("kflow")


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
            no GPUs), "tpu", or "multi_worker" (reads `TF_CONFIG`).
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
    """A short human description ("MirroredStrategy on 2 devices")."""
    name = type(strategy).__name__
    if name.startswith("_Default"):
        return "default strategy, 1 device"
    return f"{name} on {strategy.num_replicas_in_sync} replicas"
