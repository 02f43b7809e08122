#!/usr/bin/env python3
"""A small REST client for TensorFlow Serving (needs only `requests` and `numpy`).

    from client import ServingClient
    c = ServingClient("http://localhost:8501", "digits-cnn")
    c.status()                                    # GET  /v1/models/digits-cnn
    c.metadata()                                  # GET  /v1/models/digits-cnn/metadata
    c.predict_rows([{"features": img.tolist()}])  # POST :predict {"instances": [...]}
    c.predict_columns({"features": batch})        # POST :predict {"inputs": {...}}

Row format ("instances"): one JSON object per example, keyed by signature input
name; the answer is {"predictions": [{output: value, ...}, ...]}. Column format
("inputs"): one array per input name holding the whole batch; the answer is
{"outputs": {output: [...]}}. NumPy arrays and scalars are converted to lists,
NaN is sent as the JSON literal NaN (TF Serving accepts it), bytes as
{"b64": ...}.

Command line:
    python client.py status   --model digits-cnn
    python client.py metadata --model digits-cnn
    python client.py predict  --model digits-cnn --input rows.json [--columns]
    python client.py predict  --model students --input rows.csv

A CSV file is typed by the signature (read from the metadata endpoint): header
names become signature keys as kflow's export names them (letters, digits
and `_`: "previous score" -> previous_score), columns that are not inputs (a
label column) are left out, an empty cell is a missing value (NaN for a
number, "" for text), and yes/no cells are sent as text.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
import sys
from typing import Any

import numpy as np
import requests

__all__ = ["ServingClient", "ServingError", "to_json", "row_request", "column_request"]


class ServingError(Exception):
    """TF Serving answered with an error (its message), or could not be reached."""


def to_json(value: Any) -> Any:
    """NumPy arrays / scalars, bytes and nested containers -> JSON-ready values."""
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())  # bytes elements become {"b64": ...} below
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def row_request(instances: Any, signature_name: str | None = "serving_default") -> dict:
    """The body of a row-format predict request.

    Args:
        instances: A list of rows (each `{input name: value}`, or a bare value
            for single-input models), or a dict of equally long columns, which
            is turned into rows.
        signature_name: The signature to call. Defaults to "serving_default".
    """
    if isinstance(instances, dict):
        columns = {k: to_json(v) for k, v in instances.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns have different lengths: {sorted(lengths)}")
        n = lengths.pop()
        instances = [{k: v[i] for k, v in columns.items()} for i in range(n)]
    body: dict[str, Any] = {"instances": to_json(list(instances))}
    if signature_name:
        body["signature_name"] = signature_name
    return body


def column_request(inputs: Any, signature_name: str | None = "serving_default") -> dict:
    """The body of a column-format predict request (`{"inputs": {name: batch}}`)."""
    body: dict[str, Any] = {"inputs": to_json(inputs)}
    if signature_name:
        body["signature_name"] = signature_name
    return body


class ServingClient:
    """TF Serving's REST API for one model.

    Args:
        url: The server, e.g. "http://localhost:8501".
        model: The model name (as in models.config).
        version: Pin a version; `None` lets the server pick (the latest).
        label: A version label instead of a number.
        timeout: Seconds per request. Defaults to 30.
        session: A `requests.Session` to reuse connections.
    """

    def __init__(self, url: str = "http://localhost:8501", model: str = "", *,
                 version: int | None = None, label: str | None = None,
                 timeout: float = 30.0, session: requests.Session | None = None):
        if not model:
            raise ValueError("ServingClient needs a model name, e.g. model='digits-cnn'")
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.label = label
        self.timeout = timeout
        self.session = session or requests.Session()

    def model_url(self) -> str:
        path = f"{self.url}/v1/models/{self.model}"
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        elif self.label:
            path += f"/labels/{self.label}"
        return path

    def _call(self, method: str, url: str, body: dict | None = None) -> Any:
        data = None
        if body is not None:
            data = json.dumps(body, allow_nan=True)
        try:
            response = self.session.request(
                method, url, data=data, timeout=self.timeout,
                headers={"Content-Type": "application/json"} if data else None)
        except requests.RequestException as exc:
            raise ServingError(f"cannot reach TF Serving at {self.url}: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text.strip()[:500]}
        if response.status_code >= 400 or (isinstance(payload, dict) and "error" in payload):
            message = payload.get("error") if isinstance(payload, dict) else payload
            raise ServingError(f"TF Serving answered {response.status_code} for {url}: {message}")
        return payload

    # -- model status and metadata ---------------------------------------------------
    def status(self) -> dict:
        """`GET /v1/models/NAME[/versions/N]`: the versions and their state (AVAILABLE...)."""
        return self._call("GET", self.model_url())

    def metadata(self) -> dict:
        """`GET .../metadata`: the signatures (input and output names, dtypes, shapes)."""
        return self._call("GET", self.model_url() + "/metadata")

    def available_versions(self) -> list[int]:
        return sorted(int(v["version"]) for v in self.status().get("model_version_status", [])
                      if v.get("state") == "AVAILABLE")

    # -- predictions ------------------------------------------------------------------
    def predict_rows(self, instances: Any, signature_name: str = "serving_default") -> list:
        """Row format: a list of examples in, `predictions` (one per example) out."""
        body = row_request(instances, signature_name)
        return self._call("POST", self.model_url() + ":predict", body)["predictions"]

    def predict_columns(self, inputs: Any, signature_name: str = "serving_default") -> dict:
        """Column format: `{input: batch}` in, `{output: batch}` as NumPy arrays out."""
        body = column_request(inputs, signature_name)
        outputs = self._call("POST", self.model_url() + ":predict", body)["outputs"]
        if isinstance(outputs, dict):
            return {k: np.asarray(v) for k, v in outputs.items()}
        return {"output": np.asarray(outputs)}


def signature_key(column: str) -> str:
    """The signature key kflow's export gives a column: letters, digits and `_`."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", str(column)).strip("_") or "input"
    return f"f_{name}" if name[0].isdigit() else name


def csv_rows(text: str, inputs: dict[str, str]) -> tuple[list[Any], list[str]]:
    """CSV text -> rows typed by `inputs` (`{signature input: "DT_FLOAT"...}`).

    Returns:
        `(rows, columns left out)`. Without a header naming an input, every row
        is a flat list of numbers (single-input models).
    """
    table = [r for r in csv.reader(io.StringIO(text)) if r]
    if not table:
        raise ServingError("the CSV file has no rows")
    header = [h.strip() for h in table[0]]
    keys = [h if h in inputs else signature_key(h) for h in header]
    if not any(k in inputs for k in keys):
        try:
            body = table if all(_is_number(h) for h in header) else table[1:]
            return [[float(c) if c.strip() else float("nan") for c in r] for r in body], []
        except ValueError:
            raise ServingError(f"the CSV header names none of the model's inputs "
                               f"({', '.join(sorted(inputs))})") from None
    rows = []
    for r in table[1:]:
        row: dict[str, Any] = {}
        for k, cell in zip(keys, r):  # noqa: B905 - short rows: missing cells
            if k not in inputs:
                continue
            dtype, cell = inputs[k], cell.strip()
            if dtype == "DT_STRING":
                row[k] = cell
            elif cell.lower() in ("", "nan", "na", "null", "none"):
                row[k] = float("nan") if dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF") else -1
            else:
                try:
                    row[k] = (float(cell) if dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF")
                              else int(cell))
                except ValueError:
                    row[k] = cell  # the server names the bad value
        rows.append(row)
    return rows, [h for h, k in zip(header, keys) if k not in inputs]  # noqa: B905


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def signature_inputs(client: ServingClient, signature: str = "serving_default"
                     ) -> dict[str, str]:
    """`{input name: dtype}` of a signature, from the metadata endpoint."""
    meta = client.metadata().get("metadata", {}).get("signature_def", {})
    sig = meta.get("signature_def", {}).get(signature, {})
    return {k: str(v.get("dtype", "")) for k, v in sig.get("inputs", {}).items()}


def _load_rows(path: str, client: ServingClient | None = None) -> Any:
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise ServingError(f"cannot read {path}: {exc.strerror}") from None
    if path.lower().endswith((".csv", ".txt")):
        rows, ignored = csv_rows(text, signature_inputs(client) if client else {})
        if ignored:
            print(f"client: left out column(s) {', '.join(ignored)}: not model inputs",
                  file=sys.stderr)
        return rows
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ServingError(f"{path} is not JSON ({exc}); give a .json file of rows, "
                           "or a .csv file with a header") from None
    if isinstance(data, dict) and "instances" in data:
        return data["instances"]
    if isinstance(data, dict) and "inputs" in data:
        return data["inputs"]
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Query a TF Serving model over REST.")
    p.add_argument("action", choices=["status", "metadata", "predict"])
    p.add_argument("--url", default="http://localhost:8501")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--input", help="rows: .json (list of rows / instances / inputs), .csv "
                   "(a header row) or .npy")
    p.add_argument("--columns", action="store_true", help="send the column format (inputs)")
    p.add_argument("--input-name", default=None,
                   help="signature input name for a bare .npy / list of values")
    args = p.parse_args(argv)
    client = ServingClient(args.url, args.model, version=args.version)
    try:
        if args.action == "status":
            result = client.status()
        elif args.action == "metadata":
            result = client.metadata()
        else:
            if not args.input:
                p.error("predict needs --input")
            rows = _load_rows(args.input, client)
            if args.input_name and not isinstance(rows, dict):
                rows = {args.input_name: rows}
            if args.columns:
                result = {k: v.tolist() for k, v in client.predict_columns(rows).items()}
            else:
                if isinstance(rows, np.ndarray):
                    rows = list(rows)
                result = client.predict_rows(rows)
    except ServingError as exc:
        print(f"client: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
