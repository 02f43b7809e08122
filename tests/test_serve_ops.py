"""Operations of `kflow serve`: batching, metrics, limits, timeouts, access log,
model discovery, the Python client and the `kflow predict` command."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from kflow.cli.main import main as kflow_main
from kflow.serve.client import Client, ClientError
from kflow.serve.config import BatchingOptions, ServerOptions, load_model_entries
from kflow.serve.server import ServerThread, configure_logging
from kflow.serve.testing import SINGLE_B, SINGLE_W, shared_test_base

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return shared_test_base(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(base):
    with ServerThread(base, ServerOptions(port=0, poll_seconds=0)) as srv:
        yield srv


def y(rows):
    return ((np.asarray(rows, np.float32) * SINGLE_W).sum(-1) + SINGLE_B).tolist()


def concurrent_posts(url: str, bodies: list) -> list[requests.Response]:
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: requests.post(url, json=b, timeout=30), bodies))


# ------------------------------------------------------------------ batching

def test_concurrent_requests_are_batched_and_split_correctly(base):
    options = ServerOptions(port=0, poll_seconds=0, batching=BatchingOptions(
        max_batch_size=64, batch_timeout_micros=200_000))
    with ServerThread(base, options) as srv:
        rows = [[[i, 1, 0]] * (1 + i % 3) for i in range(16)]  # 1 to 3 rows per request
        answers = concurrent_posts(f"{srv.url}/v1/models/single:predict",
                                   [{"instances": r} for r in rows])
        for r, sent in zip(answers, rows, strict=True):
            assert r.status_code == 200 and r.json()["predictions"] == y(sent)
        calls = srv.server.metrics.batch_size.count("single", "1")
        assert calls < 16, "16 concurrent requests should share model calls"


def test_allowed_batch_sizes_pad_and_trim(base):
    options = ServerOptions(port=0, poll_seconds=0, batching=BatchingOptions(
        max_batch_size=8, batch_timeout_micros=200_000, allowed_batch_sizes=(4, 8)))
    with ServerThread(base, options) as srv:
        rows = [[[i, 2, 1]] for i in range(3)]
        answers = concurrent_posts(f"{srv.url}/v1/models/single:predict",
                                   [{"instances": r} for r in rows])
        assert [a.json()["predictions"] for a in answers] == [y(r) for r in rows]


def test_requests_the_batcher_cannot_take_run_alone(server):
    # 40 rows > max_batch_size (32), and a columnar request: both still answered.
    rows = [[i, 0, 0] for i in range(40)]
    r = requests.post(f"{server.url}/v1/models/single:predict", json={"instances": rows})
    assert r.json()["predictions"] == y(rows)


def test_one_bad_request_does_not_fail_its_batch(base):
    options = ServerOptions(port=0, poll_seconds=0, batching=BatchingOptions(
        batch_timeout_micros=200_000))
    with ServerThread(base, options) as srv:
        bodies = [{"examples": [{"x": 1.0}]}, {"examples": [{"x": 1}]}, {"examples": [{"x": 2.0}]}]
        answers = concurrent_posts(f"{srv.url}/v1/models/examples:classify", bodies)
        assert [a.status_code for a in answers] == [200, 400, 200]


# ------------------------------------------------------------------ limits and errors

def test_body_size_limit_is_413(base):
    options = ServerOptions(port=0, poll_seconds=0, max_body_bytes=4096)
    with ServerThread(base, options) as srv:
        url = f"{srv.url}/v1/models/single:predict"
        big = json.dumps({"instances": [[1.0, 2.0, 3.0]] * 1000})
        r = requests.post(url, data=big)
        assert r.status_code == 413 and "larger than the limit of 4096 bytes" in r.json()["error"]
        r = requests.post(url, data=(big[i:i + 500].encode() for i in range(0, len(big), 500)))
        assert r.status_code == 413 and "error" in r.json()  # chunked, no Content-Length
        assert requests.post(url, json={"instances": [[1, 2, 3]]}).status_code == 200


def test_request_timeout_is_504_and_the_server_carries_on(base):
    options = ServerOptions(port=0, poll_seconds=0, request_timeout_ms=200,
                            batching=BatchingOptions(batch_timeout_micros=2_000_000))
    with ServerThread(base, options) as srv:
        r = requests.post(f"{srv.url}/v1/models/single:predict", json={"instances": [[1, 2, 3]]})
        assert r.status_code == 504 and r.json() == {"error": "Deadline Exceeded"}
        assert requests.get(f"{srv.url}/v1/models/single").status_code == 200


def test_unknown_paths_and_methods(server):
    r = requests.get(f"{server.url}/healthz")
    assert r.status_code == 404 and "/v1/models/" in r.json()["error"]
    r = requests.post(f"{server.url}/monitoring/prometheus/metrics")
    assert r.status_code == 405 and "error" in r.json()


# ------------------------------------------------------------------ metrics and logs

def test_prometheus_metrics(server):
    requests.post(f"{server.url}/v1/models/single:predict", json={"instances": [[1, 2, 3]]})
    requests.post(f"{server.url}/v1/models/single:predict", json={"instances": "bad"})
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics").text
    assert re.search(r':tensorflow:serving:request_count\{model_name="single",status="OK"\} \d+',
                     text)
    assert 'status="INVALID_ARGUMENT"' in text
    assert re.search(r'kflow_serve_requests_total\{model="single",version="1",api="predict",'
                     r'code="200"\} \d+', text)
    assert 'kflow_serve_request_duration_seconds_bucket{model="single",version="1",' \
           'api="predict",le="+Inf"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="single",API="predict",' \
           'entrypoint="REST"' in text
    assert 'kflow_serve_model_version_state{model="multi",version="2",state="AVAILABLE"} 1' in text


def test_access_log_is_json_lines(server, tmp_path):
    path = tmp_path / "access.log"
    configure_logging(str(path))
    try:
        requests.post(f"{server.url}/v1/models/single:predict", json={"instances": [[1, 2, 3]]},
                      headers={"X-Request-Id": "abc-123"})
        requests.get(f"{server.url}/v1/models/nope")
    finally:
        configure_logging(None)
        logging.getLogger("kflow.serve").handlers.clear()
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    ok, missing = entries[-2:]
    assert ok["status"] == 200 and ok["model"] == "single" and ok["version"] == 1
    assert ok["api"] == "predict" and ok["request_id"] == "abc-123" and ok["ms"] > 0
    assert missing["status"] == 404 and "Could not find any versions" in missing["error"]


# ------------------------------------------------------------------ model discovery

def test_discovery_without_models_config(base, tmp_path):
    root = tmp_path / "exports"
    shutil.copytree(base / "single", root / "single")
    shutil.copytree(base / "strings", root / "strings")
    (root / "not-a-model").mkdir()
    entries, config = load_model_entries(root)
    assert [e.name for e in entries] == ["single", "strings"] and config is None
    entries, _ = load_model_entries(root / "single")  # one model's directory
    assert [e.name for e in entries] == ["single"]


def test_docker_base_paths_in_models_config_fall_back_to_the_base(base, tmp_path):
    root = tmp_path / "exports"
    shutil.copytree(base / "single", root / "single")
    (root / "models.config").write_text('model_config_list { config { name: "single" '
                                        'base_path: "/models/single" model_platform: '
                                        '"tensorflow" } }')
    with ServerThread(root, ServerOptions(port=0, poll_seconds=0)) as srv:
        r = requests.post(f"{srv.url}/v1/models/single:predict", json={"instances": [[1, 2, 3]]})
        assert r.json() == {"predictions": y([[1, 2, 3]])}


def test_models_appear_while_serving(base, tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    with ServerThread(root, ServerOptions(port=0, poll_seconds=0)) as srv:
        assert requests.get(f"{srv.url}/v1/models/single").status_code == 404
        shutil.copytree(base / "single", root / "single")
        srv.refresh()
        assert requests.get(f"{srv.url}/v1/models/single").json()[
            "model_version_status"][0]["state"] == "AVAILABLE"


# ------------------------------------------------------------------ clients

def test_python_client(server):
    client = Client(server.url)
    assert client.status("single")["model_version_status"][0]["state"] == "AVAILABLE"
    assert client.metadata("multi", label="stable")["model_spec"]["version"] == "1"
    assert client.predict("single", np.array([[1, 2, 3]], np.float32)) == y([[1, 2, 3]])
    assert client.predict("single", inputs={"x": [[1, 2, 3]]}) == y([[1, 2, 3]])
    assert client.predict("strings", [b"ab"])[0]["length"] == 2
    assert client.classify("examples", [{"x": 0.0}])[0][1][0] == "pos"
    assert client.regress("examples", [{"x": 1.0}], context={"offset": 1.0},
                          signature_name="regress") == [3.0]
    with pytest.raises(ClientError, match="Servable not found") as info:
        client.predict("nope", [[1]])
    assert info.value.status == 404
    with pytest.raises(ClientError, match="Cannot reach"):
        Client("http://127.0.0.1:9", timeout=2).status("single")


def test_serving_client_module_if_present(server):
    """serving/client.py (the requests-only client documented with the TF Serving
    set-up) works unchanged against kflow serve."""
    path = REPO / "serving" / "client.py"
    if not path.is_file():
        pytest.skip("serving/client.py does not exist")
    spec = importlib.util.spec_from_file_location("serving_client", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    multi = module.ServingClient(server.url, "multi")
    assert multi.available_versions() == [1, 2]
    assert "serving_default" in multi.metadata()["metadata"]["signature_def"]["signature_def"]
    rows = [{"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, 1.0]}]
    assert multi.predict_rows(rows)[0]["class_id"] == 1
    stable = module.ServingClient(server.url, "multi", label="stable")
    assert stable.predict_rows(rows)[0]["class_id"] == 0
    outputs = module.ServingClient(server.url, "single", version=1).predict_columns(
        {"x": np.array([[1, 2, 3]], np.float32)})
    assert outputs["output"].tolist() == y([[1, 2, 3]])
    with pytest.raises(module.ServingError, match="Servable not found"):
        module.ServingClient(server.url, "nope").predict_rows([[1.0]])
    assert module.main(["status", "--url", server.url, "--model", "single"]) == 0


def test_kflow_predict_command(server, tmp_path, capsys):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([[1, 2, 3], [0, 0, 1]]))
    assert kflow_main(["predict", "single", str(rows), "--url", server.url]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == y(
        [[1, 2, 3], [0, 0, 1]])

    table = tmp_path / "rows.csv"
    table.write_text("a,b,c\n1,2,3\n0.5,0,0\n")
    assert kflow_main(["predict", "single", str(table), "--url", server.url]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == y(
        [[1, 2, 3], [0.5, 0, 0]])

    examples = tmp_path / "examples.csv"
    examples.write_text("x\n1\n-2.5\n")
    assert kflow_main(["predict", "examples", str(examples), "--api", "classify",
                       "--url", server.url]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r[1][0] for r in results] == ["pos", "pos"] and results[0][1][1] > 0.5

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"signature_name": "two", "inputs": {"x": [[1, 2, 3]]}}))
    assert kflow_main(["predict", "single", str(request), "--url", server.url]) == 0
    assert set(json.loads(capsys.readouterr().out)["outputs"]) == {"y", "y_squared"}

    assert kflow_main(["predict", "nope", str(rows), "--url", server.url]) == 2
    assert "Servable not found for request: Latest(nope)" in capsys.readouterr().err


def test_kflow_serve_command_errors(tmp_path, capsys):
    assert kflow_main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert kflow_main(["serve", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size must be >= 1" in capsys.readouterr().err


_THREADS = """
import json
from kflow.errors import ConfigError
from kflow.training.strategy import configure_tensorflow_threads
configure_tensorflow_threads(1, 2)
import tensorflow as tf
out = [tf.config.threading.get_intra_op_parallelism_threads(),
       tf.config.threading.get_inter_op_parallelism_threads()]
_ = tf.constant(1.0) + 1.0  # TensorFlow has started
configure_tensorflow_threads(1, 2)  # the same: fine
try:
    configure_tensorflow_threads(3, 0)
except ConfigError as exc:
    out.append(str(exc))
print(json.dumps(out))
"""


def test_tensorflow_thread_flags_are_applied_before_tensorflow_starts():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _THREADS], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    intra, inter, message = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (intra, inter) == (1, 2)
    assert "--tensorflow-intra-op-parallelism 3 must be set before" in message


def test_tensorflow_thread_flags_are_checked(base, capsys):
    code = kflow_main(["serve", str(base), "--tensorflow_intra_op_parallelism", "-1"])
    assert code == 2
    assert "--tensorflow-intra-op-parallelism must be >= 0" in capsys.readouterr().err


def test_kflow_serve_starts_with_one_op_thread(base):
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "kflow", "serve", str(base), "--port", "0", "--poll-seconds",
         "0", "--tensorflow-intra-op-parallelism", "1", "--tensorflow_inter_op_parallelism",
         "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(base))
    try:
        lines = []
        for line in proc.stdout:  # the server prints its address once it serves
            lines.append(line)
            if "listening on" in line:
                break
        assert any("listening on" in ln for ln in lines), (lines, proc.stderr.read()[-2000:])
    finally:
        proc.terminate()
        proc.wait(60)


def test_kflow_serve_sets_its_collector_thresholds_and_restores_them(monkeypatch):
    import gc
    import sys

    from kflow.gc_policy import PROCESS_GC_THRESHOLDS
    from kflow.serve import server as server_module

    seen = []

    async def fake_serve(base, options, on_ready):
        seen.append((gc.get_threshold(), sys.getswitchinterval()))

    before = (gc.get_threshold(), sys.getswitchinterval())
    monkeypatch.setattr(server_module, "serve", fake_serve)
    assert server_module.run_server("unused") == 0
    assert seen == [(PROCESS_GC_THRESHOLDS, pytest.approx(server_module.GIL_SWITCH_INTERVAL_S))]
    assert (gc.get_threshold(), sys.getswitchinterval()) == before


def test_tuned_collector_still_collects_reference_cycles():
    import gc
    import weakref

    from kflow.gc_policy import tuned_gc

    class Node:
        pass

    with tuned_gc():
        gc.collect()
        collected = []
        first = Node()
        first.self = first  # a cycle: only the collector frees it
        weakref.finalize(first, collected.append, True)
        del first
        # Requests' objects die by reference counting; accumulated cycles are
        # still collected once the (raised) young threshold is passed.
        garbage = []
        for _ in range(3 * gc.get_threshold()[0] // 2):
            node = Node()
            node.self = node
            garbage.append(node)
        garbage.clear()
        assert collected == [True]
