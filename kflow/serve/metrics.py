"""Prometheus metrics in the text exposition format, without a client library.

Two families are exported: TF Serving's own names (`:tensorflow:serving:
request_count`, `:tensorflow:serving:request_latency`), so existing dashboards
keep working, and `kflow_serve_*` metrics that also carry the model version.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence

__all__ = ["Registry", "Counter", "Histogram", "Gauge", "ServingMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()):
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()):
        super().__init__(name, doc, labelnames)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [
            f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (),
                 buckets: Iterable[float] = ()):
        super().__init__(name, doc, labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._data: dict[tuple[str, ...], list] = {}

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            data = self._data.get(labels)
            if data is None:
                data = self._data[labels] = [[0] * len(self.buckets), 0.0, 0]
            if value == value:  # NaN falls in no bucket
                data[0][bisect.bisect_left(self.buckets, value)] += 1
            data[1] += value
            data[2] += 1

    def count(self, *labels: str) -> int:
        data = self._data.get(labels)
        return data[2] if data else 0

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(v[0]), v[1], v[2])) for k, v in self._data.items())
        for labels, (counts, total, n) in items:
            cumulative = 0
            for bound, c in zip(self.buckets, counts, strict=True):
                cumulative += c
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, labels, le)} "
                             f"{cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, labels)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, labels)} {n}")
        return lines


class Gauge(_Metric):
    """A gauge read from a callback returning `{label values: value}` at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str],
                 read: Callable[[], dict[tuple[str, ...], float]]):
        super().__init__(name, doc, labelnames)
        self._read = read

    def render(self) -> list[str]:
        return self.header() + [
            f"{self.name}{_labels(self.labelnames, k)} {_number(v)}"
            for k, v in sorted(self._read().items())]


class Registry:
    def __init__(self):
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_MICROS = tuple(s * 1e6 for s in _SECONDS)
_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """The metrics of one server."""

    def __init__(self):
        self.registry = Registry()
        r = self.registry
        self.tfs_request_count = r.add(Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.", ("model_name", "status")))
        self.tfs_request_latency = r.add(Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"), _MICROS))
        self.requests = r.add(Counter(
            "kflow_serve_requests_total", "Model API requests by model, version, API and "
            "HTTP status.", ("model", "version", "api", "code")))
        self.latency = r.add(Histogram(
            "kflow_serve_request_duration_seconds", "Model API request latency, from the "
            "request's first byte to its response.", ("model", "version", "api"), _SECONDS))
        self.batch_size = r.add(Histogram(
            "kflow_serve_batch_size", "Rows per model call.", ("model", "version"), _ROWS))
        self.http = r.add(Counter(
            "kflow_serve_http_requests_total", "All HTTP requests by method and status.",
            ("method", "code")))
        self.load_attempts = r.add(Counter(
            "kflow_serve_model_load_attempts_total", "Version loads by model and outcome.",
            ("model", "status")))

    def add_gauge(self, name: str, doc: str, labelnames: Sequence[str],
                  read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self.registry.add(Gauge(name, doc, labelnames, read))

    def render(self) -> str:
        return self.registry.render()
