"""TensorFlow's C++ noise is dropped from the CLI's stderr; real errors are not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kflow.cli.quiet import is_noise
from tests.conftest import REPO, run_cli

GRAPPLER = (
    "E0000 00:00:1796242043.803201    5762 tfg_optimizer_hook.cc:135] tfg_optimizer{any("
    "tfg-consolidate-attrs,tfg-toposort,tfg-shape-inference{graph-version=0},"
    "tfg-prepare-attrs-export)} failed: INVALID_ARGUMENT: Node while/body/_1/while/cond/"
    "StatefulPartitionedCall/digits_mlp_1/residual_1_out_elu_1/Elu has an empty op name")
CONTINUATION = "\twhen importing GraphDef to MLIR module in GrapplerHook"


@pytest.mark.parametrize("line, noise", [
    (GRAPPLER, True),
    ("E0000 00:00:1796242043.1 42 meta_optimizer.cc:966] layout failed: OUT_OF_RANGE: x", True),
    ("E0000 00:00:1796244559.306578   28038 node_def_util.cc:682] NodeDef mentions attribute "
     "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; ...", True),
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
     True),
    ("E0000 00:00:1796242181.126124    7875 cuda_platform.cc:52] failed call to cuInit: "
     "INTERNAL: CUDA error", False),
    ("F0000 00:00:1.0 42 tensor.cc:12] Check failed: dims() == 2", False),
    ("E0000 00:00:1.0 42 op_kernel.cc:1] OP_REQUIRES failed at matmul_op.cc: INVALID_ARGUMENT",
     False),
    ("Traceback (most recent call last):", False),
    ("kflow: error: something", False),
])
def test_noise_patterns(line, noise):
    assert is_noise(line, driver=True) is noise


CUINIT = ("E0000 00:00:1796242181.126124    7875 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error")


def test_cuinit_failure_is_noise_only_without_a_driver():
    assert is_noise(CUINIT, driver=False) is True   # every CPU-only machine prints it
    assert is_noise(CUINIT, driver=True) is False   # with a driver it explains a missing GPU


_SCRIPT = textwrap.dedent("""
    import os, sys
    from kflow.cli.quiet import filter_stderr
    with filter_stderr():
        os.write(2, ({grappler!r} + "\\n" + {cont!r} + "\\n").encode())
        print("python stderr line", file=sys.stderr)
        os.write(2, b"E0000 00:00:1.0 42 op_kernel.cc:1] OP_REQUIRES failed: real\\n")
        os.write(2, b"\\tan indented line after a kept one stays\\n")
        os.write(2, ({grappler!r} + "\\n").encode())
        print("stdout line")
        if sys.argv[1] == "abort":
            os.write(2, b"F0000 00:00:1.0 42 x.cc:1] Check failed: fatal\\n")
            os.abort()
    print("after", file=sys.stderr)
""").format(grappler=GRAPPLER, cont=CONTINUATION)


def test_filter_stderr_drops_noise_keeps_the_rest_in_order():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, "run"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "stdout line\n"
    assert proc.stderr.splitlines() == [
        "python stderr line",
        "E0000 00:00:1.0 42 op_kernel.cc:1] OP_REQUIRES failed: real",
        "\tan indented line after a kept one stays",
        "after",
    ]


def test_filter_stderr_loses_nothing_when_the_process_aborts():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, "abort"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "F0000 00:00:1.0 42 x.cc:1] Check failed: fatal" in proc.stderr
    assert "empty op name" not in proc.stderr


@pytest.mark.slow
def test_train_prints_no_grappler_lines_but_debug_does(tmp_path):
    """A residual ELU MLP trained in a multi-step loop makes grappler's TFG hook fail."""
    args = ["train", "digits-mlp", "--set", "skip_connections=true", "--set", "activation=elu",
            "--set", "epochs=1", "--quiet"]
    out = run_cli(*args, "--run-dir", str(tmp_path / "a"))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    debug = run_cli("--debug", *args, "--run-dir", str(tmp_path / "b"))
    assert debug.returncode == 0, debug.stderr
    assert "has an empty op name" in debug.stderr  # what the filter removed
