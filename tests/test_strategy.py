"""Distribution strategies: MirroredStrategy on 2 logical CPU devices."""

import json
import subprocess
import sys
import textwrap

import pytest

from kflow.errors import ConfigError
from tests.conftest import REPO

_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import kflow
    out = {}
    for strategy in ("default", "mirrored"):
        run = kflow.train("digits-mlp", epochs=3, run_dir=sys.argv[1] + "/" + strategy,
                          strategy=strategy, verbose=0, seed=0,
                          set_args=["dropout=0.0", "early_stopping=false", "batch_size=64"])
        info = json.load(open(sys.argv[1] + "/" + strategy + "/run.json"))
        out[strategy] = {"metrics": run.metrics, "strategy": info["strategy"],
                         "history": run.history["loss"]}
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.multidevice
def test_mirrored_on_two_logical_cpus_matches_single_device(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    res = json.loads(line[len("RESULT"):])
    assert res["mirrored"]["strategy"] == "MirroredStrategy on 2 replicas"
    assert res["default"]["strategy"] == "default strategy, 1 device"
    # Same data, same seed, gradients averaged over replicas = the global-batch gradient.
    for a, b in zip(res["default"]["history"], res["mirrored"]["history"], strict=True):
        assert a == pytest.approx(b, rel=0.05)
    for split in ("train", "test"):
        assert res["mirrored"]["metrics"][split]["accuracy"] == pytest.approx(
            res["default"]["metrics"][split]["accuracy"], abs=0.03)


def test_unknown_strategy_is_a_config_error():
    from kflow.training.strategy import resolve_strategy

    with pytest.raises(ConfigError, match=r"Unknown strategy 'mirorred' \(did you mean "
                                          r"'mirrored'\?\)"):
        resolve_strategy("mirorred")


def test_tpu_requested_without_tpu_is_a_clear_error():
    from kflow.training.strategy import resolve_strategy

    with pytest.raises(ConfigError, match="no TPU was found"):
        resolve_strategy("tpu")
