"""`kflow serve`: TensorFlow Serving's REST API over a model base."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Serve every model of a TF Serving model base (BASE/NAME/VERSION/, as `kflow export`
writes it) over TensorFlow Serving's REST API, so clients written for TF Serving work
unchanged. New versions are picked up while serving (loaded and warmed up before they
replace the old one), concurrent requests are batched into one model call, and
Prometheus metrics are at /monitoring/prometheus/metrics.

examples:
  kflow serve exports                      every model under exports/, port 8501
  kflow serve exports/digits-cnn           one model directory (NAME/VERSION/)
  kflow serve exports --port 9000 --host 0.0.0.0
  kflow serve exports --model-config-file models.config --poll-seconds 5
  kflow serve exports --no-batching
  curl -d '{"instances": [[...]]}' http://127.0.0.1:8501/v1/models/digits-cnn:predict
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve a model base over TF Serving's REST API",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", nargs="?", default=None,
                   help="model base directory (BASE/NAME/VERSION/) or one model's directory")
    p.add_argument("--port", type=int, default=8501, help="REST port (default 8501; 0: any "
                   "free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                        "for all)")
    p.add_argument("--model-config-file", default=None, metavar="FILE",
                   help="TF Serving models.config (default: BASE/models.config if present, "
                        "else every model directory under BASE)")
    p.add_argument("--poll-seconds", type=float, default=1.0, metavar="S",
                   help="check for new versions and config changes every S seconds (a "
                        "changed config is applied once it is unchanged for one poll); 0: "
                        "never (default 1)")
    b = p.add_argument_group("batching (TF Serving's BatchingParameters)")
    b.add_argument("--no-batching", dest="batching", action="store_false",
                   help="call the model once per request")
    b.add_argument("--batching-parameters-file", default=None, metavar="FILE",
                   help="BatchingParameters text proto, as TF Serving's flag of that name")
    b.add_argument("--max-batch-size", type=int, default=None, help="rows per model call "
                   "(default 32)")
    b.add_argument("--batch-timeout-micros", type=int, default=None,
                   help="longest wait for a batch to fill; 0: none, batches form "
                        "while the model is busy (default 0)")
    b.add_argument("--num-batch-threads", type=int, default=None,
                   help="model calls at once per version (default 1)")
    b.add_argument("--max-enqueued-batches", type=int, default=None,
                   help="queue capacity in batches; beyond it requests get 503 (default 100)")
    o = p.add_argument_group("operations")
    o.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024,
                   help="larger request bodies get 413 (default 32 MiB)")
    o.add_argument("--request-timeout-ms", type=int, default=30000,
                   help="per-request deadline; 504 after it (default 30000)")
    o.add_argument("--shutdown-grace-seconds", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, time for in-flight requests to finish (default 30)")
    o.add_argument("--access-log", default="-", metavar="FILE",
                   help="JSON access log: '-' stderr (default), a file, or 'off'")
    o.add_argument("--metrics-path", default="/monitoring/prometheus/metrics",
                   help="Prometheus endpoint ('' to disable)")
    o.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="do not warm versions up before they serve")
    t = p.add_argument_group("TensorFlow (TF Serving's flags of the same names)")
    t.add_argument("--tensorflow-intra-op-parallelism", "--tensorflow_intra_op_parallelism",
                   dest="intra_op_threads", type=int, default=0, metavar="N",
                   help="threads one op may use; 0: TensorFlow decides (default). 1 makes "
                        "small models cheaper per call on few cores")
    t.add_argument("--tensorflow-inter-op-parallelism", "--tensorflow_inter_op_parallelism",
                   dest="inter_op_threads", type=int, default=0, metavar="N",
                   help="ops run at once; 0: TensorFlow decides (default)")
    p.set_defaults(func=run, needs_tensorflow=True)


def build_options(args: argparse.Namespace):
    from pathlib import Path

    from kflow.serve.config import BatchingOptions, ServerOptions

    if args.batching_parameters_file:
        path = Path(args.batching_parameters_file)
        from kflow.errors import ConfigError

        if not path.is_file():
            raise ConfigError(f"Batching parameters file {path} does not exist.")
        batching = BatchingOptions.from_text_proto(path.read_text(), str(path))
    else:
        batching = BatchingOptions()
    for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                  "max_enqueued_batches"):
        value = getattr(args, field)
        if value is not None:
            setattr(batching, field, value)
    batching.enabled = args.batching
    return ServerOptions(
        host=args.host, port=args.port, model_config_file=args.model_config_file,
        poll_seconds=args.poll_seconds, batching=batching.validate(),
        max_body_bytes=args.max_body_bytes, request_timeout_ms=args.request_timeout_ms,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        access_log=None if args.access_log == "off" else args.access_log,
        metrics_path=args.metrics_path, warmup=args.warmup,
        intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads,
    ).validate()


def run(args: argparse.Namespace) -> int:
    from kflow.errors import ConfigError
    from kflow.serve.server import configure_logging, run_server

    if args.base is None and args.model_config_file is None:
        raise ConfigError("Give a model base directory (kflow serve BASE) or "
                          "--model-config-file.")
    options = build_options(args)
    configure_logging(options.access_log)

    def ready(server) -> None:
        versions = server.manager.serving_versions()
        for name in sorted(versions):
            served = ", ".join(map(str, versions[name])) or "none available"
            print(f"  {name}: version {served}  {server.url}/v1/models/{name}", flush=True)
        if not versions:
            print("  no models yet; new ones under the base are picked up while serving",
                  flush=True)
        batching = options.batching
        if not batching.enabled:
            mode = "no batching"
        elif batching.batch_timeout_micros:
            mode = (f"batching up to {batching.max_batch_size} rows, waiting up to "
                    f"{batching.batch_timeout_micros} us for a batch to fill")
        else:
            mode = f"batching up to {batching.max_batch_size} rows"
        print(f"kflow serve: listening on {server.url} ({mode}); Ctrl-C to stop", flush=True)

    return run_server(args.base, options, on_ready=ready)
