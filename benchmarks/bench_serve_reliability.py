"""Reliability of `kflow serve` under hostile traffic, version swaps and a long
mixed load (issue 17, "Server"). Loopback only, bounded, re-runnable.

It builds a small model base with the test fixtures (`kflow.serve.testing`:
`multi`, `single`, `strings`, `examples`, plus a `swap` model whose versions
change during the run), starts `kflow serve` as its own process (so its memory
is measured alone), then:

1. **hostile**: `--hostile` requests (default 6,000) from 8 threads: malformed
   HTTP over raw sockets (bad header characters, bad Content-Length and chunk
   sizes, spaces / NUL in paths, unknown methods, CONNECT / TRACE, too many or
   too long headers, no Host, TLS on the HTTP port, `Content-Encoding: br`,
   gzip that is not gzip, gzip bombs, `%0a` in paths), random JSON bodies,
   random model names and paths, deep nesting, a few bodies of 8-30 MB; one
   good request (answer checked) after every 4 hostile ones;
2. **swaps**: 8 clients on `swap` while versions are added, a broken version is
   published, the serving version is deleted (the fallback path), and fixed;
3. **steady**: `--steady-seconds` (default 60) of mixed good / hostile load,
   RSS sampled every second; the steady-state RSS is the median of the last
   third, its drift the last third's median minus the middle third's.

It prints one table: requests, failed good requests, 5xx, error answers that are
not `{"error": ...}` JSON, tracebacks in the server log, RSS before / after /
peak, steady RSS and drift. It exits 1 when a good request failed, a 5xx or a
non-JSON error was seen, or a traceback was logged.

Usage:

    python benchmarks/bench_serve_reliability.py
    python benchmarks/bench_serve_reliability.py --hostile 20000 --steady-seconds 300
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: The table rows of the last `run()` (read by `bench_reliability.py`).
LAST_ROWS: list[tuple[str, str]] = []

GOOD = b'{"instances": [[1.0, 1.0, 1.0]]}'
GOOD_Y = 6.5  # the `single` model: x . [1, 2, 3] + 0.5


def swap_y(version: int) -> float:
    return 6.0 * version + 0.5  # write_scale_version: weights scaled by the version


# --------------------------------------------------------------------------- HTTP

def exchange(port: int, data: bytes, timeout: float = 60.0) -> tuple[int, dict, bytes]:
    """One request on its own connection: (status, headers, body); status -1
    when the server closed without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer (413) before reading everything
        received = b""
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except (TimeoutError, ConnectionResetError):
                chunk = b""
            if not chunk:
                break
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            if sep:
                headers = _headers(head)
                length = headers.get("content-length")
                if length is not None and len(body) >= int(length):
                    break
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return -1, {}, received
    first = head.split(b"\r\n", 1)[0].split()
    return int(first[1]), _headers(head), body


def _headers(head: bytes) -> dict:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


# --------------------------------------------------------------------------- hostile requests

def _bomb() -> bytes:
    return gzip.compress(b"[" + b"0," * 30_000_000 + b"0]", 9)


BOMB = None


def hostile_requests(rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    """`n` hostile requests as (kind, raw bytes)."""
    global BOMB
    if BOMB is None:
        BOMB = _bomb()
    fixed = {
        "bad-header-char": b"GET /v1/models/single HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        "bad-content-length": b"POST /v1/models/single:predict HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: 1x\r\n\r\n",
        "bad-chunk-size": b"POST /v1/models/single:predict HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "space-in-path": b"GET /v1/models/si ngle HTTP/1.1\r\nHost: x\r\n\r\n",
        "nul-in-path": b"GET /v1/models/si\x00ngle HTTP/1.1\r\nHost: x\r\n\r\n",
        "unknown-method": b"FROB /v1/models/single HTTP/1.1\r\nHost: x\r\n\r\n",
        "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        "trace": b"TRACE /v1/models/single HTTP/1.1\r\nHost: x\r\n\r\n",
        "too-many-headers": b"GET /v1/models/single HTTP/1.1\r\nHost: x\r\n"
                            + b"".join(b"X-%d: y\r\n" % i for i in range(300)) + b"\r\n",
        "header-too-long": b"GET /v1/models/single HTTP/1.1\r\nHost: x\r\nX: "
                           + b"a" * 20000 + b"\r\n\r\n",
        "no-host": b"GET /v1/models/single HTTP/1.1\r\n\r\n",
        "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        "brotli": request("POST", "/v1/models/single:predict", GOOD, "Content-Encoding: br\r\n"),
        "bad-gzip": request("POST", "/v1/models/single:predict", GOOD,
                            "Content-Encoding: gzip\r\n"),
        "bad-deflate": request("POST", "/v1/models/single:predict", GOOD + b"x",
                               "Content-Encoding: deflate\r\n"),
        "gzip-bomb": request("POST", "/v1/models/single:predict", BOMB,
                             "Content-Encoding: gzip\r\n"),
        "pct0a-path": b"GET /v1/models/si%0angle HTTP/1.1\r\nHost: x\r\n\r\n",
        "options": b"OPTIONS /v1/models/single HTTP/1.1\r\nHost: x\r\n\r\n",
        "deep-nesting": request("POST", "/v1/models/single:predict",
                                b'{"instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"),
        "deflate-ok-but-wrong": request("POST", "/v1/models/single:predict",
                                        zlib.compress(b'{"instances": 5}'),
                                        "Content-Encoding: deflate\r\n"),
    }
    kinds = list(fixed)
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.35:
            kind = kinds[i % len(kinds)]
            out.append((kind, fixed[kind]))
        elif r < 0.55:
            name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_%")
                           for _ in range(rng.randint(1, 40)))
            api = rng.choice([":predict", ":classify", ":regress", "", "/metadata"])
            method = "POST" if api.startswith(":") else rng.choice(["GET", "POST", "DELETE"])
            out.append(("unknown-model", request(method, f"/v1/models/{name}{api}", GOOD)))
        elif r < 0.85:
            out.append(("random-json", request("POST", rng.choice([
                "/v1/models/single:predict", "/v1/models/multi:predict",
                "/v1/models/strings:predict", "/v1/models/examples:classify",
                "/v1/models/examples:regress"]), _random_json(rng))))
        elif r < 0.998:
            path = rng.choice(["/", "/v1", "/v1/models", "/v1/models/single/versions/x",
                               "/v1/models/single/labels/latest", "/monitoring/prometheus/x",
                               "/v1/models/single?q=1", "/v1/models/single:predict?x=1"])
            out.append(("random-path", request(rng.choice(["GET", "POST", "PUT", "PATCH"]),
                                               path, b"{}")))
        else:
            size = rng.choice([8, 16, 30]) * (1 << 20)
            out.append(("big-body", request("POST", "/v1/models/single:predict",
                                            b'{"instances": [' + b"[1,2,3]," * (size // 8)
                                            + b"[1,2,3]]}")))
    return out


def _random_json(rng: random.Random) -> bytes:
    def value(depth: int):
        r = rng.random()
        if depth > 4 or r < 0.3:
            return rng.choice([0, 1, -1, 2**63, 2**64, 1e39, 0.5, "a", "", True, None,
                               {"b64": "aGk="}, {"b64": "!!"}, float("nan")])
        if r < 0.7:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["instances", "inputs", "examples", "context", "signature_name",
                            "a", "b", "x", "b64"]): value(depth + 1)
                for _ in range(rng.randint(0, 3))}

    doc = value(0)
    if rng.random() < 0.8:
        doc = {rng.choice(["instances", "inputs", "examples"]): doc}
    text = json.dumps(doc).encode()
    if rng.random() < 0.1:
        text = text[: rng.randint(0, len(text))]  # truncated
    return text


# --------------------------------------------------------------------------- the run

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.good = self.good_failed = self.server_errors = self.deadline = 0
        self.non_json = self.no_answer = 0
        self.examples: list[str] = []

    def hostile(self, kind: str, status: int, headers: dict, body: bytes) -> None:
        with self.lock:
            self.requests += 1
            if status == -1:
                self.no_answer += 1
                return
            if status == 504 and kind == "big-body":
                self.deadline += 1  # valid, but more work than the 30 s deadline allows
            elif status >= 500 and status != 501:
                self.server_errors += 1
                self._example(f"{kind}: {status} {body[:120]!r}")
            if status >= 400 and not _json_error(headers, body):
                self.non_json += 1
                self._example(f"{kind}: non-JSON {status} {body[:120]!r}")

    def checked(self, ok: bool, what: str) -> None:
        with self.lock:
            self.requests += 1
            self.good += 1
            if not ok:
                self.good_failed += 1
                self._example(f"good request failed: {what[:160]}")

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)


def _json_error(headers: dict, body: bytes) -> bool:
    if headers.get("content-type") != "application/json":
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and set(payload) == {"error"}


def good_request(port: int, tally: Tally, model: str = "single",
                 allowed: set[float] | None = None) -> None:
    try:
        status, headers, body = exchange(port, request(
            "POST", f"/v1/models/{model}:predict", GOOD))
        y = json.loads(body)["predictions"][0] if status == 200 else None
        ok = status == 200 and (y in allowed if allowed is not None else y == GOOD_Y)
        tally.checked(ok, f"{status} {body[:120]!r}")
    except OSError as exc:
        tally.checked(False, repr(exc))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(base: Path, log: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kflow", "serve", str(base), "--port", "0",
         "--poll-seconds", "0.3", "--access-log", str(log.with_suffix(".access"))],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"kflow serve exited; see {log}")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    raise TimeoutError("kflow serve did not start")


def run(args: argparse.Namespace) -> int:
    from kflow.serve.testing import build_test_base, write_broken_version, write_scale_version

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kflow-serve-reliability-"))
    base = build_test_base(work / "base", config=False)
    write_scale_version(base, "swap", 1)
    proc, port = start_server(base, work / "server.log")
    tally = Tally()
    try:
        for _ in range(50):
            good_request(port, tally)
        rss_before = rss_mb(proc.pid)
        peak = rss_before

        # 1. hostile requests, interleaved with good ones
        jobs = hostile_requests(rng, args.hostile)
        started = time.time()

        def one(job: tuple[int, tuple[str, bytes]]) -> None:
            i, (kind, data) = job
            try:
                status, headers, body = exchange(port, data)
            except OSError:
                status, headers, body = -1, {}, b""
            tally.hostile(kind, status, headers, body)
            if i % 4 == 0:
                good_request(port, tally)

        with ThreadPoolExecutor(8) as pool:
            for k, _ in enumerate(pool.map(one, enumerate(jobs))):
                if k % 200 == 0:
                    peak = max(peak, rss_mb(proc.pid))
        hostile_seconds = time.time() - started
        rss_after_hostile = rss_mb(proc.pid)

        # 2. version swaps under load
        allowed = {swap_y(v) for v in (1, 2, 3, 4)}
        stop = threading.Event()

        def swap_client() -> None:
            while not stop.is_set():
                good_request(port, tally, "swap", allowed)

        clients = [threading.Thread(target=swap_client) for _ in range(8)]
        for t in clients:
            t.start()
        try:
            steps = [lambda: write_scale_version(base, "swap", 2),
                     lambda: write_scale_version(base, "swap", 3),
                     lambda: write_broken_version(base, "swap", 4),
                     lambda: shutil.rmtree(base / "swap" / "3"),  # falls back to 2
                     lambda: shutil.rmtree(base / "swap" / "4"),
                     lambda: write_scale_version(base, "swap", 4)]
            for step in steps:
                step()
                time.sleep(args.swap_seconds)
                peak = max(peak, rss_mb(proc.pid))
        finally:
            stop.set()
            for t in clients:
                t.join(60)

        # 3. steady mixed load
        samples = []
        end = time.time() + args.steady_seconds
        steady_jobs = hostile_requests(rng, 2000)
        with ThreadPoolExecutor(6) as pool:
            while time.time() < end:
                batch = [steady_jobs[rng.randrange(len(steady_jobs))] for _ in range(24)]
                batch = [j for j in batch if j[0] not in ("big-body", "gzip-bomb")]
                list(pool.map(one, enumerate(batch, start=1)))
                list(pool.map(lambda _: good_request(port, tally), range(24)))
                samples.append(rss_mb(proc.pid))
                peak = max(peak, samples[-1])
        rss_after = rss_mb(proc.pid)
        third = max(1, len(samples) // 3)
        steady = statistics.median(samples[-third:])
        drift = steady - statistics.median(samples[third:2 * third] or samples)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log_text = (work / "server.log").read_text(errors="replace")
    tracebacks = log_text.count("Traceback (most recent call last)")
    access_lines = sum(1 for _ in open(work / "server.access", errors="replace"))

    rows = [
        ("requests (hostile + good)", f"{tally.requests:,}"),
        ("hostile requests", f"{args.hostile:,} ({hostile_seconds:.0f} s) + "
                             f"{tally.requests - tally.good - args.hostile:,} in the steady phase"),
        ("good requests / failed", f"{tally.good:,} / {tally.good_failed}"),
        ("5xx answers (besides 504 below)", f"{tally.server_errors}"),
        ("504 deadline on valid 8-30 MB bodies", f"{tally.deadline}"),
        ("error answers that are not JSON", f"{tally.non_json}"),
        ("connections closed without an answer", f"{tally.no_answer}"),
        ("tracebacks in the server log", f"{tracebacks}"),
        ("access-log lines", f"{access_lines:,}"),
        ("RSS before / after hostile / at the end (MB)",
         f"{rss_before:.0f} / {rss_after_hostile:.0f} / {rss_after:.0f}"),
        ("RSS peak (MB)", f"{peak:.0f}"),
        (f"steady RSS, last third of {args.steady_seconds:.0f} s (MB) / drift",
         f"{steady:.0f} / {drift:+.1f}"),
    ]
    LAST_ROWS[:] = rows
    print()
    print("| kflow serve reliability | |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    for example in tally.examples:
        print("  e.g.", example)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"  files kept in {work}")
    failed = tally.good_failed or tally.server_errors or tally.non_json or tracebacks
    return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hostile", type=int, default=6000, help="hostile requests (default 6000)")
    p.add_argument("--steady-seconds", type=float, default=60.0,
                   help="length of the steady mixed load (default 60)")
    p.add_argument("--swap-seconds", type=float, default=3.0,
                   help="time between version changes (default 3)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--keep", action="store_true", help="keep the model base and logs")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
