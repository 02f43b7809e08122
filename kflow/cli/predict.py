"""`kflow predict`: send rows from a JSON or CSV file to a TF Serving REST endpoint."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Read rows (JSON, JSON lines or CSV), send them to a TF Serving-compatible server
(`kflow serve` or TensorFlow Serving itself) and print one prediction per row as a
JSON line.

input formats (--format, default: from the file name, else auto-detected):
  json    a list of rows ([[...], ...] or [{"x": ...}, ...]), or a whole request
          body ({"instances": ...}, {"inputs": ...}, {"examples": ...}) sent as is
  jsonl   one row per line
  csv     a header line; if the header names the model's inputs, each row becomes
          {"name": value, ...}, else each row is one flat list of numbers. Header
          names are mapped to signature keys as the export named them: letters,
          digits and _ ("previous score" -> previous_score); columns that are not
          inputs (a label column) are left out, with a note. Cells are typed by the
          signature: an empty cell is a missing value (NaN for numbers, "" for text,
          left out of a tf.Example), yes/no columns are sent as text.
          --api classify/regress sends tf.Examples to the "classification" /
          "regression" signature kflow exports write (unless --signature).

examples:
  kflow predict digits-cnn rows.json
  kflow predict digits-cnn rows.csv --url http://gpu-box:8501 --version 3
  echo '[[1.0, 2.0, 3.0]]' | kflow predict my-model --signature two
  kflow predict census people.csv --api classify
"""


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="send rows to a TF Serving-compatible REST endpoint",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model name on the server")
    p.add_argument("input", nargs="?", default="-", help="JSON / JSONL / CSV file (default: "
                   "stdin)")
    p.add_argument("--url", default="http://127.0.0.1:8501", help="server root (default "
                   "http://127.0.0.1:8501)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, default=None, help="a specific model version")
    which.add_argument("--label", default=None, help="a version label from models.config")
    p.add_argument("--signature", default=None, help="signature name (default "
                   "serving_default)")
    p.add_argument("--api", default="predict", choices=["predict", "classify", "regress"])
    p.add_argument("--format", default=None, choices=["json", "jsonl", "csv"])
    p.add_argument("--batch-size", type=int, default=256, help="rows per request (default "
                   "256)")
    p.add_argument("--raw", action="store_true", help="print the server's JSON answers as "
                   "they are")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.set_defaults(func=run, needs_tensorflow=False)


def _read_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if not path.is_file():
        from kflow.errors import DataError

        raise DataError(f"Input file {source} does not exist.")
    return path.read_text()


def _guess_format(source: str, text: str) -> str:
    suffix = Path(source).suffix.lower()
    if suffix in (".json", ".jsonl", ".csv"):
        return suffix[1:]
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            json.loads(text)
            return "json"
        except ValueError:
            return "jsonl"
    return "csv"


def _scalar(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _csv_rows(text: str, names: list[str] | None, named: bool) -> list[Any]:
    reader = csv.reader(io.StringIO(text))
    rows = [r for r in reader if r]
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    has_header = not all(isinstance(_scalar(h), (int, float)) for h in header)
    body = rows[1:] if has_header else rows
    table = [[_scalar(v) for v in r] for r in body]
    # A column with any decimal is a float column (tf.Example and float inputs
    # reject integers mixed into float features).
    width = max((len(r) for r in table), default=0)
    for col in range(width):
        cells = [r[col] for r in table if col < len(r)]
        if any(isinstance(c, float) for c in cells):
            for r in table:
                if col < len(r) and isinstance(r[col], int):
                    r[col] = float(r[col])
    if has_header and (named or (names and sorted(header) == sorted(names))):
        return [dict(zip(header, r, strict=False)) for r in table]
    return table


def _signatures(client, args) -> dict[str, Any]:
    from kflow.serve.client import ClientError

    try:
        meta = client.metadata(args.model, args.version, args.label)
    except ClientError:
        return {}
    return meta.get("metadata", {}).get("signature_def", {}).get("signature_def", {}) or {}


def signature_key(column: str) -> str:
    """The signature key kflow's export gives a column: letters, digits and `_`."""
    import re

    name = re.sub(r"[^0-9A-Za-z_]+", "_", str(column)).strip("_") or "input"
    return f"f_{name}" if name[0].isdigit() else name


def typed_csv_rows(text: str, inputs: dict[str, str], examples: bool = False
                   ) -> tuple[list[dict[str, Any]], list[str]] | None:
    """CSV rows typed by a signature's inputs, or `None` when the header names none.

    Args:
        text: The CSV text (a header line, then rows).
        inputs: `{signature input: dtype}` ("DT_FLOAT", "DT_STRING"...).
        examples: Rows for tf.Examples (`:classify` / `:regress`): the file's
            column names are kept and missing cells left out.

    Returns:
        `(rows, ignored columns)`.
    """
    reader = csv.reader(io.StringIO(text))
    table = [r for r in reader if r]
    if not table:
        return [], []
    header = [h.strip() for h in table[0]]
    keys = [h if h in inputs else signature_key(h) for h in header]
    if not any(k in inputs for k in keys):
        return None
    ignored = [h for h, k in zip(header, keys, strict=True) if k not in inputs]
    rows = []
    for r in table[1:]:
        row: dict[str, Any] = {}
        for h, k, cell in zip(header, keys, r, strict=False):
            if k not in inputs:
                continue
            dtype, cell = inputs[k], cell.strip()
            name = h if examples else k
            if dtype in ("DT_STRING",):
                if cell or not examples:
                    row[name] = cell
            elif dtype.startswith(("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT")):
                if cell.lower() in ("", "nan", "na", "null", "none"):
                    if not examples:
                        row[name] = float("nan")
                else:
                    try:
                        row[name] = float(cell)
                    except ValueError:
                        row[name] = cell  # the server names the bad value
            else:
                if cell == "":
                    if not examples:
                        row[name] = -1
                else:
                    try:
                        row[name] = int(cell)
                    except ValueError:
                        row[name] = cell
        rows.append(row)
    return rows, ignored


def run(args: argparse.Namespace) -> int:
    from kflow.errors import DataError
    from kflow.serve.client import Client

    client = Client(args.url, timeout=args.timeout)
    text = _read_text(args.input)
    fmt = args.format or _guess_format(args.input, text)
    body: dict | None = None
    if fmt == "json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{args.input} is not valid JSON: {exc}") from None
        if isinstance(doc, dict):
            body = doc
            rows = None
        elif isinstance(doc, list):
            rows = doc
        else:
            raise DataError(f"{args.input}: expected a list of rows or a request object.")
    elif fmt == "jsonl":
        try:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise DataError(f"{args.input} is not valid JSON lines: {exc}") from None
    else:
        sigs = _signatures(client, args)
        if args.api != "predict" and not args.signature and "serving_default" in sigs:
            key = "classification" if args.api == "classify" else "regression"
            if key in sigs:
                args.signature = key
        # tf.Example features are typed by serving_default, which takes the same columns.
        sig = sigs.get(args.signature or "serving_default", {}) if args.api == "predict" \
            else sigs.get("serving_default", {})
        inputs = {k: str(v.get("dtype", "")) for k, v in sig.get("inputs", {}).items()}
        typed = typed_csv_rows(text, inputs, examples=args.api != "predict") if inputs \
            else None
        if typed is not None:
            rows, ignored = typed
            if ignored:
                print(f"kflow: left out column(s) {', '.join(ignored)}: not inputs of "
                      f"{args.model}", file=sys.stderr)
        else:
            names = sorted(inputs) or None
            rows = _csv_rows(text, names, named=args.api != "predict")
    path = client.model_path(args.model, args.version, args.label) + f":{args.api}"
    if body is not None:
        _print_answer(client.request("POST", path, body), args.raw)
        return 0
    key = "instances" if args.api == "predict" else "examples"
    for start in range(0, len(rows), max(1, args.batch_size)):
        chunk: dict[str, Any] = {key: rows[start:start + args.batch_size]}
        if args.signature:
            chunk["signature_name"] = args.signature
        _print_answer(client.request("POST", path, chunk), args.raw)
    return 0


def _print_answer(answer: Any, raw: bool) -> None:
    if raw or not isinstance(answer, dict):
        print(json.dumps(answer))
        return
    for key in ("predictions", "results"):
        if key in answer and isinstance(answer[key], list):
            for row in answer[key]:
                print(json.dumps(row))
            return
    print(json.dumps(answer))
