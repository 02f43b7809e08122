"""Serving throughput and latency: `kflow serve` (batching on / off) against the
model's in-process limit and a hand-written one-request-one-`model.predict` server.

The model is a recipe's Keras model (default `digits-cnn`, untrained weights:
speed does not depend on them), exported as a SavedModel with a
`serving_default` signature into a TF Serving model base. Then, side by side:

* in-process limit: the SavedModel's signature called in a loop on batches of
  1, 8 and 32 rows (the number of rows a server could gather from 1, 8 and 32
  concurrent clients), rows/second;
* `kflow serve BASE` with its default batching, and with `--no-batching`;
* naive: a `http.server.ThreadingHTTPServer` (HTTP/1.1 keep-alive) whose handler
  does `json.loads` -> `model.predict(x, verbose=0)` on the Keras model ->
  `json.dumps`, what people write by hand;
* reference: the minimal server kflow serve is measured against, the same
  HTTP library (aiohttp's low-level server), `json.loads` -> NumPy -> the
  same compiled signature (`kflow.serve.servable.Servable.run`) behind the
  same micro-batcher (`kflow.serve.batching.Batcher`, default options) ->
  `json.dumps`, and none of TF Serving's validation or error handling: what
  exactness costs is kflow serve's throughput over the reference's;
* before (with `--before-tree DIR`): `kflow serve` from another source tree,
  e.g. the commit before a change (`git archive HEAD | tar -x -C DIR`), in
  the same interleaved rounds.

Each server is its own process; the load generator is another process (Python
asyncio, raw HTTP/1.1 over keep-alive connections on loopback, so the client
costs little next to the server): C concurrent clients, each posting one row
(`{"instances": [row]}`) as soon as its previous answer arrived. After a
warm-up second it counts answers for `--seconds` and reports requests/second
and the p50 / p99 latency. Before each measurement the servers must be idle (a
server that fell behind keeps computing after its clients stopped). Rounds
interleave all variants and the table shows the median over the rounds, so load
from other work on the machine hits every variant alike.

Usage:

    python benchmarks/bench_serving.py
    python benchmarks/bench_serving.py --seconds 8 --rounds 3 --model digits-resnet
    python benchmarks/bench_serving.py --concurrency 1 8 32 --out /tmp/bench-serving
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "bench"


# --------------------------------------------------------------------------- load generator

async def _client(host: str, port: int, request: bytes, warm_until: float, stop_at: float,
                  latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            end = time.perf_counter()
            if start >= warm_until and end <= stop_at:
                latencies.append(end - start)
                if b" 200 " not in status_line:
                    errors.append(1)
    finally:
        writer.close()


async def _load(url: str, concurrency: int, seconds: float, body: bytes, warmup: float) -> dict:
    hostport, path = url.split("://", 1)[1].split("/", 1)
    host, port = hostport.split(":")
    request = (f"POST /{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    now = time.perf_counter()
    latencies: list[float] = []
    errors: list[int] = []
    await asyncio.gather(*[
        _client(host, int(port), request, now + warmup, now + warmup + seconds, latencies, errors)
        for _ in range(concurrency)])
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies \
            else float("nan")

    return {"requests": len(latencies), "rps": len(latencies) / seconds, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "errors": len(errors)}


def load_main(args: argparse.Namespace) -> None:
    body = Path(args.body).read_bytes()
    result = asyncio.run(_load(args.load, args.concurrency, args.seconds, body, args.warmup))
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- naive server

def naive_main(args: argparse.Namespace) -> None:
    """One request, one `model.predict`: the server people write by hand."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import keras
    import numpy as np

    model = keras.saving.load_model(args.naive_server, compile=False)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's naming
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            x = np.asarray(payload["instances"], dtype="float32")
            probabilities = model.predict(x, verbose=0)
            out = json.dumps({"predictions": probabilities.tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- reference server

def reference_main(args: argparse.Namespace) -> None:
    """aiohttp + json.loads -> NumPy -> the same compiled function and batcher -> json.dumps."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from aiohttp import web

    from kflow.serve.batching import Batcher
    from kflow.serve.config import BatchingOptions
    from kflow.serve.servable import Servable

    servable = Servable.load(MODEL_NAME, 1, args.reference_server)
    sig = servable.signature("serving_default")
    input_name = next(iter(sig.inputs))
    executor = ThreadPoolExecutor(max(4, os.cpu_count() or 1), thread_name_prefix="ref-model")

    async def main() -> None:
        batcher = Batcher(servable.run, BatchingOptions(), executor)

        async def handle(request: web.BaseRequest) -> web.Response:
            if request.method == "GET":
                return web.Response(text="ok")
            payload = json.loads(await request.read())
            x = np.asarray(payload["instances"], dtype=np.float32)
            out = await batcher.submit("serving_default", {input_name: x})
            rows = [{k: v[i].tolist() for k, v in out.items()} for i in range(len(x))]
            return web.Response(body=json.dumps({"predictions": rows}).encode(),
                                content_type="application/json")

        runner = web.ServerRunner(web.Server(handle), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# --------------------------------------------------------------------------- set-up

def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def build_model(model_name: str, work: Path, overrides: list[str]) -> tuple[Path, Path, Path]:
    """Exports the recipe's model to work/base/bench/1, saves model.keras and one
    request body. Returns (base, keras file, body file)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kflow.recipe.registry import get_recipe_class

    keras.utils.set_random_seed(0)
    hparams = dict(item.split("=", 1) for item in overrides)
    recipe = get_recipe_class(model_name)(**{k: _value(v) for k, v in hparams.items()})
    data = recipe.load_data()
    model = recipe.build_model(data)
    model.compile()
    keras_path = work / "model.keras"
    model.save(keras_path)
    spec = model.inputs[0]
    shape = [None, *spec.shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
    def serve(x):
        p = model(x, training=False)
        return {"probabilities": p, "class_id": tf.argmax(p, axis=-1)}

    module = tf.Module()
    module.model = model
    base = work / "base"
    tf.saved_model.save(module, str(base / MODEL_NAME / "1"), signatures={"serving_default": serve})
    row = np.asarray(data.x[:1], dtype="float32")
    body = work / "body.json"
    body.write_text(json.dumps({"instances": row.tolist()}))
    return base, keras_path, body


def in_process(base: Path, batch_sizes: list[int], seconds: float, data_rows) -> dict[int, float]:
    """Rows/second of the SavedModel's signature called in a loop."""
    import numpy as np
    import tensorflow as tf

    fn = tf.saved_model.load(str(base / MODEL_NAME / "1")).signatures["serving_default"]
    out = {}
    for bs in batch_sizes:
        x = tf.constant(np.repeat(data_rows, bs, axis=0))
        fn(x=x)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(x=x)
            calls += 1
        out[bs] = calls * bs / (time.perf_counter() - start)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def start_servers(base: Path, keras_path: Path, skip_naive: bool,
                  before_tree: str | None = None, skip_no_batching: bool = False,
                  one_op_thread: bool = False) -> dict[str, tuple]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    servers = {}
    commands = {"kflow serve (batching)": ([], REPO)}
    if one_op_thread:
        commands["kflow serve (batching, 1 op thread)"] = (
            ["--tensorflow-intra-op-parallelism", "1", "--tensorflow-inter-op-parallelism", "1"],
            REPO)
    if not skip_no_batching:
        commands["kflow serve (no batching)"] = (["--no-batching"], REPO)
    if before_tree:
        commands["kflow serve, before (batching)"] = ([], Path(before_tree).resolve())
    for label, (extra, tree) in commands.items():
        port = free_port()
        cmd = [sys.executable, "-m", "kflow", "serve", str(base), "--port", str(port),
               "--poll-seconds", "0", "--access-log", "off", *extra]
        proc = subprocess.Popen(cmd, env={**env, "PYTHONPATH": str(tree)}, cwd=str(tree),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        servers[label] = (proc, f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict",
                          f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}")
    port = free_port()
    cmd = [sys.executable, __file__, "--reference-server", str(base / MODEL_NAME / "1"),
           "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    servers["reference (aiohttp + json + same batcher)"] = (
        proc, f"http://127.0.0.1:{port}/predict", f"http://127.0.0.1:{port}/")
    if not skip_naive:
        port = free_port()
        cmd = [sys.executable, __file__, "--naive-server", str(keras_path), "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        servers["naive model.predict server"] = (proc, f"http://127.0.0.1:{port}/predict",
                                                 f"http://127.0.0.1:{port}/")
    for proc, _, ready in servers.values():
        wait_ready(ready, proc)
    return servers


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_idle(pids: list[int], timeout: float = 120.0) -> None:
    """Waits until the servers stop computing: a server that fell behind (the
    naive one does) would otherwise still burn CPU during the next measurement."""
    deadline = time.time() + timeout
    before = sum(_cpu_seconds(p) for p in pids)
    while time.time() < deadline:
        time.sleep(0.5)
        now = sum(_cpu_seconds(p) for p in pids)
        if now - before < 0.05:
            return
        before = now


def run_load(url: str, concurrency: int, seconds: float, body: Path, warmup: float) -> dict:
    cmd = [sys.executable, __file__, "--load", url, "--concurrency", str(concurrency),
           "--seconds", str(seconds), "--body", str(body), "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report

def table(results: dict, limits: dict[int, float], concurrency: list[int]) -> str:
    lines = ["| variant | clients | req/s | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in concurrency:
        lines.append(f"| in-process limit (batch of {c}) | - | {limits[c]:,.0f} rows/s | | | |")
        for label, per_c in results.items():
            r = per_c[c]
            lines.append(f"| {label} | {c} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['errors']} |")
    return "\n".join(lines)


def median_results(rounds: list[dict]) -> dict:
    out: dict = {}
    for label in rounds[0]:
        out[label] = {}
        for c in rounds[0][label]:
            runs = [r[label][c] for r in rounds]
            out[label][c] = {k: statistics.median(run[k] for run in runs)
                             for k in ("rps", "p50_ms", "p99_ms")}
            out[label][c]["errors"] = sum(run["errors"] for run in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits-cnn", help="recipe whose model is served")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe hyperparameter, e.g. --set filters=128 (a bigger model)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-no-batching", action="store_true")
    parser.add_argument("--one-op-thread", action="store_true",
                        help="also kflow serve with --tensorflow-intra-op-parallelism 1 "
                             "--tensorflow-inter-op-parallelism 1")
    parser.add_argument("--before-tree", default=None, metavar="DIR",
                        help="also serve with kflow from DIR (e.g. the commit before a change: "
                        "git archive HEAD | tar -x -C DIR)")
    parser.add_argument("--out", default=None, help="directory for results.json and table.md")
    # internal modes
    parser.add_argument("--load", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--body", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--naive-server", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--reference-server", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        args.concurrency = args.concurrency[0]
        return load_main(args)
    if args.naive_server:
        return naive_main(args)
    if args.reference_server:
        sys.path.insert(0, str(REPO))
        return reference_main(args)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    # SIGTERM stops the servers too (the finally clause below).
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"building {args.model} in {work} ...", flush=True)
    base, keras_path, body = build_model(args.model, work, args.set)
    import numpy as np

    row = np.asarray(json.loads(body.read_text())["instances"], dtype="float32")
    print("starting servers ...", flush=True)
    servers = start_servers(base, keras_path, args.skip_naive, args.before_tree,
                            args.skip_no_batching, args.one_op_thread)
    rounds, limit_rounds = [], []
    try:
        for i in range(args.rounds):
            wait_idle([proc.pid for proc, _, _ in servers.values()])
            limit_rounds.append(in_process(base, args.concurrency, args.seconds, row))
            results: dict = {label: {} for label in servers}
            for c in args.concurrency:
                for label, (_, url, _) in servers.items():
                    wait_idle([proc.pid for proc, _, _ in servers.values()])
                    results[label][c] = run_load(url, c, args.seconds, body, args.warmup)
                    r = results[label][c]
                    print(f"round {i + 1}: {label:28s} c={c:3d} {r['rps']:8.0f} req/s  "
                          f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                          f"errors {r['errors']}", flush=True)
            rounds.append(results)
    finally:
        for proc, _, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in servers.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    limits = {c: statistics.median(r[c] for r in limit_rounds) for c in args.concurrency}
    results = median_results(rounds)
    report = table(results, limits, args.concurrency)
    top = max(args.concurrency)
    batched = results["kflow serve (batching)"][top]["rps"]
    summary = [f"at {top} clients: kflow serve with batching = "
               f"{batched / limits[top]:.2f}x the in-process limit at batch {top}"]
    ref = results["reference (aiohttp + json + same batcher)"][top]["rps"]
    if ref > 0:
        summary.append(f"{batched / ref:.2f}x the reference server")
    before = results.get("kflow serve, before (batching)", {}).get(top, {}).get("rps")
    if before:
        summary.append(f"{batched / before:.2f}x kflow serve before the change")
    if "naive model.predict server" in results:
        naive = results["naive model.predict server"][top]["rps"]
        summary.append(f"{batched / naive:.1f}x the naive server" if naive > 0 else
                       "the naive server answered no request within the measured window")
    cpu = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    model = args.model + "".join(f" {s}" for s in args.set)
    header = (f"model {model}, {args.seconds:g} s per cell, median of {args.rounds} "
              f"interleaved rounds; {platform.processor() or platform.machine()}, {cpu} CPUs, "
              f"load average {load:.1f} at the end")
    text = f"{header}\n\n{report}\n\n" + ", ".join(summary) + "\n"
    print("\n" + text)
    (work / "table.md").write_text(text)
    (work / "results.json").write_text(json.dumps(
        {"results": results, "in_process_rows_per_s": limits, "rounds": rounds,
         "model": args.model, "header": header}, indent=1))


if __name__ == "__main__":
    main()
