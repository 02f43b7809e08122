"""A small REST client for TF Serving and `kflow serve` (standard library only).

Example:

```python
from kflow.serve import Client

client = Client("http://127.0.0.1:8501")
client.status("digits")                       # {"model_version_status": [...]}
client.predict("digits", [[0.0] * 64])        # [[0.01, 0.9, ...]]
client.predict("digits", inputs={"x": ...})   # columnar: {"outputs": ...} value
client.classify("census", [{"age": 39, "workclass": "State-gov"}])
```
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from kflow.errors import KflowError

__all__ = ["Client", "ClientError", "to_json_value"]


class ClientError(KflowError):
    """The server answered with an error (`status` is the HTTP status), or could
    not be reached (`status` is `None`)."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status, self.body = status, body


def to_json_value(value: Any) -> Any:
    """NumPy arrays and scalars to lists and numbers, `bytes` to `{"b64": ...}`."""
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if hasattr(value, "tolist") and not isinstance(value, (str, dict)):
        return to_json_value(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


class Client:
    """Talks to `/v1/models/...` of TF Serving or `kflow serve`.

    Args:
        url: Server root. Defaults to "http://127.0.0.1:8501".
        timeout: Seconds per request. Defaults to 60.
    """

    def __init__(self, url: str = "http://127.0.0.1:8501", timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    # ------------------------------------------------------------------ low level

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Sends one request and returns the decoded JSON answer.

        Raises:
            ClientError: on an HTTP error (with the server's `error` message) or
                when the server cannot be reached.
        """
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", "replace")
            try:
                payload = json.loads(raw)
                message = payload.get("error", raw) if isinstance(payload, dict) else raw
            except ValueError:
                payload, message = raw, raw.strip() or exc.reason
            raise ClientError(f"{method} {path} failed with HTTP {exc.code}: {message}",
                              exc.code, payload) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"Cannot reach {self.url}: {reason}. Is the server running "
                              "(`kflow serve BASE`)?") from None
        return json.loads(text) if text.strip() else None

    @staticmethod
    def model_path(model: str, version: int | None = None, label: str | None = None) -> str:
        if version is not None and label is not None:
            raise ValueError("Give a version or a label, not both.")
        path = "/v1/models/" + quote(model, safe="")
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += "/labels/" + quote(label, safe="")
        return path

    # ------------------------------------------------------------------ the API

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """`GET /v1/models/MODEL[/versions/V|/labels/L]`."""
        return self.request("GET", self.model_path(model, version, label))

    def metadata(self, model: str, version: int | None = None, label: str | None = None
                 ) -> dict:
        """`GET /v1/models/MODEL[...]/metadata`: signature defs."""
        return self.request("GET", self.model_path(model, version, label) + "/metadata")

    def predict(self, model: str, instances: Any = None, *, inputs: Any = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> Any:
        """`:predict` in row format (`instances`, returns `predictions`) or in
        columnar format (`inputs`, returns `outputs`)."""
        if (instances is None) == (inputs is None):
            raise ValueError("Give exactly one of instances (row format) or inputs (columnar).")
        body: dict[str, Any] = {}
        if signature_name:
            body["signature_name"] = signature_name
        if instances is not None:
            body["instances"] = to_json_value(instances)
        else:
            body["inputs"] = to_json_value(inputs)
        answer = self.request("POST", self.model_path(model, version, label) + ":predict", body)
        return answer["predictions"] if instances is not None else answer["outputs"]

    def _examples(self, api: str, model: str, examples: Sequence[Mapping], context, signature_name,
                  version, label) -> list:
        body: dict[str, Any] = {"examples": to_json_value(list(examples))}
        if context is not None:
            body["context"] = to_json_value(context)
        if signature_name:
            body["signature_name"] = signature_name
        answer = self.request("POST", self.model_path(model, version, label) + f":{api}", body)
        return answer["results"]

    def classify(self, model: str, examples: Sequence[Mapping], *, context: Mapping | None = None,
                 signature_name: str | None = None, version: int | None = None,
                 label: str | None = None) -> list:
        """`:classify`: per example, a list of `[label, score]`."""
        return self._examples("classify", model, examples, context, signature_name, version,
                              label)

    def regress(self, model: str, examples: Sequence[Mapping], *, context: Mapping | None = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> list:
        """`:regress`: one value per example."""
        return self._examples("regress", model, examples, context, signature_name, version,
                              label)
