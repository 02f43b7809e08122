"""Version changes while serving: hot swap under load, broken versions, policies,
labels and config reloads, and graceful shutdown of the `kflow serve` process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from kflow.serve.config import BatchingOptions, ServerOptions
from kflow.serve.server import ServerThread
from kflow.serve.testing import (
    free_port,
    shared_test_base,
    write_broken_version,
    write_scale_version,
)

REPO = Path(__file__).resolve().parents[1]
ROW = [[1.0, 1.0, 1.0]]


def y_of(version_scale: float) -> float:
    return 6.0 * version_scale + 0.5  # x=[1,1,1], w=[1,2,3]*scale, b=0.5


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(url: str, model: str) -> dict[str, dict]:
    r = requests.get(f"{url}/v1/models/{model}", timeout=10)
    if r.status_code != 200:
        return {}
    return {v["version"]: v for v in r.json()["model_version_status"]}


class Load:
    """Clients posting the same row in a loop; records (status, y) per client."""

    def __init__(self, url: str, model: str, clients: int = 6):
        self.url = f"{url}/v1/models/{model}:predict"
        self.stop = threading.Event()
        self.results: list[list[tuple[int, float | str]]] = [[] for _ in range(clients)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(clients)]

    def _run(self, i: int) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                r = session.post(self.url, json={"instances": ROW}, timeout=30)
                value = r.json()["predictions"][0] if r.status_code == 200 else r.text
                self.results[i].append((r.status_code, value))
            except Exception as exc:  # noqa: BLE001 - a failed request is a result
                self.results[i].append((-1, repr(exc)))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def count(self) -> int:
        return sum(len(r) for r in self.results)

    def seen(self, value: float) -> bool:
        return any(v == value for res in self.results for _, v in res[-20:])


@pytest.mark.slow
@pytest.mark.parametrize("batching", [True, False], ids=["batching", "no-batching"])
def test_new_version_under_load_then_broken_then_fixed(tmp_path, batching):
    write_scale_version(tmp_path, "swap", 1)
    options = ServerOptions(port=0, poll_seconds=0.1, batching=BatchingOptions(enabled=batching))
    with ServerThread(tmp_path, options) as server, Load(server.url, "swap") as load:
        wait_for(lambda: load.count() > 50, what="first responses")
        write_scale_version(tmp_path, "swap", 2)
        wait_for(lambda: load.seen(y_of(2)), what="version 2 answering")
        n = load.count()
        wait_for(lambda: load.count() > n + 50, what="more responses")

        write_broken_version(tmp_path, "swap", 3)
        wait_for(lambda: status_of(server.url, "swap").get("3", {}).get("state") == "END",
                 what="version 3 failing to load")
        n = load.count()
        wait_for(lambda: load.count() > n + 50, what="responses after the failed load")
        status = status_of(server.url, "swap")
        assert status["2"]["state"] == "AVAILABLE"
        assert status["3"]["status"]["error_code"] != "OK"
        assert "Failed to load" in status["3"]["status"]["error_message"] or \
            status["3"]["status"]["error_message"]
        assert status["1"]["state"] == "END" and status["1"]["status"]["error_code"] == "OK"
        assert all(v == y_of(2) for res in load.results for _, v in res[-5:])

        # Fixing the directory (new files) makes the server retry it.
        shutil.rmtree(tmp_path / "swap" / "3")
        write_scale_version(tmp_path, "swap", 3)
        wait_for(lambda: load.seen(y_of(3)), what="fixed version 3 answering")

    failures = [r for res in load.results for r in res if r[0] != 200]
    assert failures == [], failures[:5]
    order = {y_of(1): 1, y_of(2): 2, y_of(3): 3}
    for res in load.results:  # a client never goes back to an older version
        versions = [order[v] for _, v in res]
        assert versions == sorted(versions)
    assert load.count() > 200


@pytest.mark.slow
def test_policies_labels_and_config_reload(tmp_path):
    base = tmp_path / "base"
    for v in (1, 2, 3):
        write_scale_version(base, "m", v)
    config = tmp_path / "models.config"

    def write_config(policy: str, labels: dict[str, int]) -> None:
        label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}'
                              for k, v in labels.items())
        text = (f'model_config_list {{ config {{ name: "m" base_path: "{base / "m"}" '
                f'model_platform: "tensorflow" model_version_policy {{ {policy} }} '
                f"{label_text} }} }}")
        tmp = config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, config)

    def predict(path: str):
        r = requests.post(f"{server.url}/v1/models/m{path}:predict", json={"instances": ROW},
                          timeout=10)
        return r.status_code, r.json()

    write_config("latest { num_versions: 2 }", {"stable": 2})
    options = ServerOptions(port=0, poll_seconds=0.1, model_config_file=str(config))
    with ServerThread(None, options) as server:
        status = status_of(server.url, "m")
        assert sorted(status) == ["2", "3"]  # version 1 is never loaded
        assert predict("") == (200, {"predictions": [y_of(3)]})
        assert predict("/labels/stable") == (200, {"predictions": [y_of(2)]})
        assert predict("/versions/1")[0] == 404

        write_config("specific { versions: 1 }", {"stable": 1, "old": 1})
        wait_for(lambda: status_of(server.url, "m").get("1", {}).get("state") == "AVAILABLE"
                 and status_of(server.url, "m")["3"]["state"] == "END", what="policy change")
        assert predict("") == (200, {"predictions": [y_of(1)]})
        assert predict("/labels/old") == (200, {"predictions": [y_of(1)]})
        assert predict("/versions/3")[0] == 404

        config.write_text("model_config_list { this is not a config }")
        wait_for(lambda: server.manager.config_error, what="the broken config to be seen")
        assert predict("/labels/stable") == (200, {"predictions": [y_of(1)]})


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests(tmp_path_factory):
    base = shared_test_base(tmp_path_factory.getbasetemp())
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kflow", "serve", str(base), "--port", str(port),
         "--poll-seconds", "0", "--batch-timeout-micros", "1500000", "--max-batch-size", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        for line in proc.stdout:
            if "listening on" in line:
                break
        else:
            pytest.fail(f"kflow serve did not start: {proc.stderr.read()[-2000:]}")
        url = f"http://127.0.0.1:{port}/v1/models/single:predict"
        results: list = []

        def client(i: int) -> None:
            r = requests.post(url, json={"instances": [[i, 0, 0]]}, timeout=30)
            results.append((r.status_code, r.json(), i))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # all eight are now waiting in the 1.5 s batch window
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(60) == 0
        assert sorted(r[2] for r in results) == list(range(8))
        for status, payload, i in results:
            assert status == 200 and payload == {"predictions": [i * 1.0 + 0.5]}
        log_lines = [json.loads(line) for line in proc.stderr.read().splitlines()
                     if line.startswith("{")]
        predicts = [e for e in log_lines if e.get("api") == "predict"]
        assert len(predicts) == 8 and all(e["status"] == 200 and e["model"] == "single"
                                          for e in predicts)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_config_file_written_in_place_is_read_only_once_it_is_complete(tmp_path):
    """Truncate-then-write (an editor saving in place) never unloads the models."""
    import asyncio

    from kflow.serve.config import ServerOptions, load_model_entries
    from kflow.serve.manager import ModelManager

    config = tmp_path / "models.config"

    def text(*names):
        return "model_config_list { " + " ".join(
            f'config {{ name: "{n}" base_path: "{tmp_path / n}" }}' for n in names) + " }"

    config.write_text(text("a"))

    async def run():
        manager = ModelManager(None, ServerOptions(port=0, model_config_file=str(config)), None)
        entries, manager._config_file = load_model_entries(None, config)
        manager._config_stamp = manager._stamp()
        manager._apply_entries(entries)
        models = manager._models

        with config.open("w"):  # truncated: the editor has not written yet
            pass
        manager._reload_config()  # a poll sees the empty file
        assert not models["a"].removed
        config.write_text(text("a", "b"))
        manager._reload_config()  # changed again since the last poll: wait
        assert "b" not in models and not models["a"].removed
        manager._reload_config()  # unchanged for one poll: applied
        assert sorted(models) == ["a", "b"] and not models["b"].removed
        config.write_text("")  # an empty config that stays empty unloads (as TF Serving)
        manager._reload_config()
        manager._reload_config()
        assert models["a"].removed and models["b"].removed
        manager._load_pool.shutdown(wait=False)

    asyncio.run(run())
