"""Server options, TF Serving's `models.config` and batching parameters.

`models.config` is parsed with the real `ModelServerConfig` proto of
`tensorflow-serving-api` and `google.protobuf.text_format`, so a file TF Serving
accepts means the same thing here. Batching parameters use the field names of
TF Serving's `BatchingParameters` (`--batching_parameters_file`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

from kflow.errors import ConfigError

__all__ = [
    "BatchingOptions", "ServerOptions", "ModelEntry", "load_model_entries",
    "parse_model_config_text", "scan_versions", "MODELS_CONFIG",
]

log = logging.getLogger("kflow.serve")

MODELS_CONFIG = "models.config"
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
_VERSION_RE = re.compile(r"^\d+$")


@dataclasses.dataclass
class BatchingOptions:
    """Server-side batching, named like TF Serving's `BatchingParameters`.

    Attributes:
        enabled: Batch concurrent requests into one model call. Defaults to `True`.
        max_batch_size: Most rows in one model call. Defaults to 32.
        batch_timeout_micros: How long the oldest queued request may wait for
            others before its batch runs (it runs at once when full). With 0, as in
            TF Serving, a free batch thread takes whatever is queued right away, and
            batches grow by themselves while the batch threads are busy: no added
            latency at low load. Defaults to 0.
        num_batch_threads: Model calls running at once per model version.
            Defaults to 1 (TensorFlow parallelises inside each call).
        max_enqueued_batches: Queue capacity, in batches of `max_batch_size`
            rows; beyond it requests fail with 503 as in TF Serving. Defaults to 100.
        allowed_batch_sizes: If set, batches are padded up to the next of these
            sizes (the last must equal `max_batch_size`). Defaults to `()`.
    """

    enabled: bool = True
    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    num_batch_threads: int = 1
    max_enqueued_batches: int = 100
    allowed_batch_sizes: tuple[int, ...] = ()

    def validate(self) -> BatchingOptions:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1. Got {self.max_batch_size}.")
        if self.batch_timeout_micros < 0:
            raise ConfigError(
                f"batch_timeout_micros must be >= 0. Got {self.batch_timeout_micros}.")
        if self.num_batch_threads < 1:
            raise ConfigError(f"num_batch_threads must be >= 1. Got {self.num_batch_threads}.")
        if self.max_enqueued_batches < 1:
            raise ConfigError(
                f"max_enqueued_batches must be >= 1. Got {self.max_enqueued_batches}.")
        sizes = tuple(int(s) for s in self.allowed_batch_sizes)
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)) or sizes[0] < 1:
                raise ConfigError(f"allowed_batch_sizes must be positive and strictly "
                                  f"increasing. Got {list(sizes)}.")
            if sizes[-1] != self.max_batch_size:
                raise ConfigError(
                    f"The last entry of allowed_batch_sizes must equal max_batch_size "
                    f"({self.max_batch_size}). Got {list(sizes)}.")
        self.allowed_batch_sizes = sizes
        return self

    @classmethod
    def from_text_proto(cls, text: str, source: str = "batching parameters") -> BatchingOptions:
        """Reads TF Serving's `BatchingParameters` text format, e.g.
        `max_batch_size { value: 64 } batch_timeout_micros { value: 2000 }`."""
        from google.protobuf import text_format

        message = _batching_parameters_class()()
        try:
            text_format.Parse(text, message)
        except text_format.ParseError as exc:
            raise ConfigError(f"Could not parse {source}: {exc}") from None
        opts = cls()
        for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                      "max_enqueued_batches"):
            if message.HasField(field):
                setattr(opts, field, int(getattr(message, field).value))
        opts.allowed_batch_sizes = tuple(message.allowed_batch_sizes)
        if message.pad_variable_length_inputs:
            log.warning("%s: pad_variable_length_inputs is not supported; requests with "
                        "different inner shapes are batched separately instead.", source)
        return opts.validate()


_BATCHING_CLASS = None


def _batching_parameters_class():
    """`tensorflow.serving.BatchingParameters`, declared here because the
    tensorflow-serving-api wheel does not ship session_bundle_config.proto."""
    global _BATCHING_CLASS
    if _BATCHING_CLASS is not None:
        return _BATCHING_CLASS
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="kflow_batching_parameters.proto", package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    msg = proto.message_type.add(name="BatchingParameters")
    F = descriptor_pb2.FieldDescriptorProto
    fields = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 3, ".google.protobuf.StringValue"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 5, ".google.protobuf.Int64Value"),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
    ]
    for name, number, type_name in fields:
        msg.field.add(name=name, number=number, type=F.TYPE_MESSAGE, type_name=type_name,
                      label=F.LABEL_OPTIONAL)
    msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64,
                  label=F.LABEL_REPEATED)
    msg.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL,
                  label=F.LABEL_OPTIONAL)
    pool.Add(proto)
    _BATCHING_CLASS = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))
    return _BATCHING_CLASS


@dataclasses.dataclass
class ServerOptions:
    """Everything `kflow serve` can be told.

    Attributes:
        host: Interface to bind. Defaults to "127.0.0.1" (this machine only).
        port: REST port; 0 picks a free one. Defaults to 8501 (TF Serving's).
        model_config_file: A `models.config`; defaults to `BASE/models.config`
            when that exists, else every model directory under BASE is served.
        poll_seconds: How often model directories (and the config file) are
            checked for new versions. 0 disables polling. A changed config
            file is applied once it has stayed the same for one poll (never
            half-written). Defaults to 1.0.
        batching: :class:`BatchingOptions`.
        max_body_bytes: Larger request bodies get 413. Defaults to 32 MiB.
        request_timeout_ms: Per-request deadline (504 after it), like
            `--rest_api_timeout_in_ms`. Defaults to 30000.
        shutdown_grace_seconds: On SIGTERM/SIGINT, how long in-flight requests may
            take to finish. Defaults to 30.
        access_log: "-" for stderr, a file path, or `None` for none. Defaults to "-".
        metrics_path: Prometheus endpoint, "" to disable. Defaults to
            "/monitoring/prometheus/metrics" (TF Serving's usual path).
        warmup: Warm each version up before it serves. Defaults to `True`.
        intra_op_threads: Threads one TensorFlow op may use, as TF Serving's
            `--tensorflow_intra_op_parallelism`; 0: TensorFlow decides (all
            cores). 1 halves the CPU time of a small model's call on 2 cores
            (`benchmarks/bench_serving.py --one-op-thread`). Defaults to 0.
        inter_op_threads: Ops run at once, as TF Serving's
            `--tensorflow_inter_op_parallelism`; 0: TensorFlow decides.
            Defaults to 0.
    """

    host: str = "127.0.0.1"
    port: int = 8501
    model_config_file: str | None = None
    poll_seconds: float = 1.0
    batching: BatchingOptions = dataclasses.field(default_factory=BatchingOptions)
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_ms: int = 30000
    shutdown_grace_seconds: float = 30.0
    access_log: str | None = "-"
    metrics_path: str = DEFAULT_METRICS_PATH
    warmup: bool = True
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def validate(self) -> ServerOptions:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535. Got {self.port}.")
        if self.poll_seconds < 0:
            raise ConfigError(f"poll_seconds must be >= 0. Got {self.poll_seconds}.")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024. Got {self.max_body_bytes}.")
        if self.request_timeout_ms <= 0:
            raise ConfigError(f"request_timeout_ms must be > 0. Got {self.request_timeout_ms}.")
        self.batching.validate()
        return self


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model to serve: where its versions live and which of them to serve.

    Attributes:
        name: Model name in URLs.
        base_path: Directory holding numbered version directories.
        policy: "latest", "all" or "specific".
        num_versions: For "latest": how many of the newest versions.
        versions: For "specific": the versions to serve.
        labels: Version labels (`version_labels` in models.config).
    """

    name: str
    base_path: Path
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: tuple[tuple[str, int], ...] = ()

    def aspired(self, on_disk: list[int]) -> list[int]:
        """The versions the policy wants loaded, newest first."""
        ordered = sorted(on_disk, reverse=True)
        if self.policy == "all":
            return ordered
        if self.policy == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[: max(1, self.num_versions)]


def parse_model_config_text(text: str, source: str, base: Path | None = None) -> list[ModelEntry]:
    """Parses a `ModelServerConfig` in text format (TF Serving's `--model_config_file`).

    Relative `base_path`s are resolved against the config file's directory; an
    absolute one that does not exist here (for example `/models/NAME`, the path
    inside TF Serving's Docker image) falls back to `BASE/NAME`.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"Could not parse {source} as a ModelServerConfig text proto: {exc}"
                          ) from None
    kind = config.WhichOneof("config")
    if kind == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use "
                          "model_config_list.")
    root = Path(source).resolve().parent if source and os.path.exists(source) else (
        base or Path.cwd())
    entries, seen = [], set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ConfigError(f"{source}: every model config needs a name.")
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config "
                              f"list ({source}).")
        seen.add(model.name)
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {model.name} requests unsupported platform "
                              f"{model.model_platform}; kflow serves TensorFlow SavedModels.")
        base_path = Path(model.base_path) if model.base_path else Path(model.name)
        if not base_path.is_absolute():
            base_path = root / base_path
        if not base_path.exists() and base is not None and (base / base_path.name).is_dir():
            log.info("base_path %s of model %s does not exist here; using %s", base_path,
                     model.name, base / base_path.name)
            base_path = base / base_path.name
        policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        entries.append(ModelEntry(
            name=model.name, base_path=base_path, policy=policy,
            num_versions=max(1, model.model_version_policy.latest.num_versions or 1),
            versions=tuple(sorted(model.model_version_policy.specific.versions)),
            labels=tuple(sorted(model.version_labels.items())),
        ))
    return entries


def scan_versions(base_path: Path) -> dict[int, Path]:
    """Numbered version directories holding a SavedModel (`saved_model.pb`).

    Directories still being written (no `saved_model.pb` yet) are left out until
    the file appears, so a copy in progress is never loaded half-way.
    """
    found: dict[int, Path] = {}
    try:
        children = list(os.scandir(base_path))
    except OSError:
        return found
    for child in children:
        if not child.is_dir() or not _VERSION_RE.match(child.name):
            continue
        version = int(child.name)
        if version >= 1 << 63:
            continue
        path = Path(child.path)
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            found[version] = path
    return found


def _is_model_dir(path: Path) -> bool:
    try:
        return any(c.is_dir() and _VERSION_RE.match(c.name) for c in os.scandir(path))
    except OSError:
        return False


def load_model_entries(base: str | Path | None, config_file: str | Path | None = None
                       ) -> tuple[list[ModelEntry], Path | None]:
    """The models to serve and the config file they came from (or `None`).

    Args:
        base: The model base (`BASE/NAME/VERSION/`), or one model's directory
            (`NAME/VERSION/`), or `None` when `config_file` names every path.
        config_file: A `models.config`. Defaults to `BASE/models.config` if present.

    Raises:
        ConfigError: if nothing can be served from these paths.
    """
    base = Path(base).resolve() if base is not None else None
    if base is not None and not base.is_dir():
        raise ConfigError(f"Model base {base} is not a directory.")
    if config_file is None and base is not None and (base / MODELS_CONFIG).is_file():
        config_file = base / MODELS_CONFIG
    if config_file is not None:
        config_file = Path(config_file).resolve()
        if not config_file.is_file():
            raise ConfigError(f"Model config file {config_file} does not exist.")
        entries = parse_model_config_text(config_file.read_text(), str(config_file), base)
        return entries, config_file
    if base is None:
        raise ConfigError("Give a model base directory or a model config file.")
    if _is_model_dir(base):
        return [ModelEntry(base.name, base)], None
    entries = [ModelEntry(child.name, Path(child.path)) for child in sorted(
        os.scandir(base), key=lambda c: c.name) if child.is_dir() and _is_model_dir(
        Path(child.path))]
    return entries, None
