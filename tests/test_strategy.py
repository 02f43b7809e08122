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


@pytest.mark.parametrize("replicas, text", [(1, "MirroredStrategy on 1 replica"),
                                            (2, "MirroredStrategy on 2 replicas")])
def test_describe_strategy_is_grammatical(replicas, text):
    from kflow.training.strategy import describe_strategy

    strategy = type("MirroredStrategy", (), {"num_replicas_in_sync": replicas})()
    assert describe_strategy(strategy) == text


@pytest.mark.multidevice
def test_cli_devices_splits_the_cpu_for_mirrored(tmp_path):
    from tests.conftest import run_cli

    out = run_cli("--devices", "2", "train", "digits-mlp", "--strategy", "mirrored",
                  "--set", "epochs=1", "--run-dir", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert "(MirroredStrategy on 2 replicas; " in out.stdout
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["strategy"] == "MirroredStrategy on 2 replicas"
    assert out.stderr == ""  # no device-probing or grappler noise


@pytest.mark.parametrize("args, message", [
    (["--devices", "0", "train", "digits-mlp"],
     "kflow: error: --devices must be an int >= 1. Got 0 instead."),
    (["train", "digits-mlp", "--devices", "-1"],
     "kflow: error: --devices must be an int >= 1. Got -1 instead."),
])
def test_bad_devices_is_one_line(args, message):
    from tests.conftest import run_cli

    out = run_cli(*args)
    assert out.returncode == 2
    assert out.stderr.strip() == message


def test_split_cpu_after_tensorflow_started_is_a_clear_error():
    script = textwrap.dedent("""
        import tensorflow as tf
        from kflow.training.strategy import split_cpu
        tf.constant(1.0) + 1.0  # devices are initialized
        split_cpu(1)  # what is already there: fine
        try:
            split_cpu(3)
        except Exception as exc:
            print(type(exc).__name__ + ": " + str(exc))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == (
        "ConfigError: Cannot split the CPU into 3 logical devices: TensorFlow already "
        "initialized its devices (1 logical CPU). Split it before any TensorFlow op runs.")
