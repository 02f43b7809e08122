"""Canonical error codes and their HTTP statuses, as TensorFlow Serving maps them.

Every error a request can cause is a :class:`ServingError` carrying one of the
canonical codes of `tensorflow/core/protobuf/error_codes.proto`; the REST layer
turns it into `{"error": "<message>"}` with the HTTP status TF Serving uses
(`ToHTTPStatusCode` in `tensorflow_serving/model_servers/http_server.cc`).
"""

from __future__ import annotations

import enum

__all__ = ["Code", "ServingError", "HTTP_STATUS"]


class Code(enum.IntEnum):
    """The canonical error codes (the numbers of `tensorflow.error.Code`)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """An error answered to one request; `message` is what the client reads.

    Args:
        code: A :class:`Code`.
        message: The error message, worded like TF Serving's where it has one.
        http_status: Overrides the status derived from `code` (for statuses TF
            Serving has no code for, such as 413). Defaults to `None`.
    """

    def __init__(self, code: Code, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = Code(code)
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    def __str__(self) -> str:
        return self.message

    def to_string(self) -> str:
        """`"INVALID_ARGUMENT: message"`, as `absl::Status::ToString()` prints it."""
        return f"{self.code.name}: {self.message}"

    @classmethod
    def invalid_argument(cls, *parts: object) -> ServingError:
        return cls(Code.INVALID_ARGUMENT, "".join(str(p) for p in parts))

    @classmethod
    def not_found(cls, *parts: object) -> ServingError:
        return cls(Code.NOT_FOUND, "".join(str(p) for p in parts))

    @classmethod
    def failed_precondition(cls, *parts: object) -> ServingError:
        return cls(Code.FAILED_PRECONDITION, "".join(str(p) for p in parts))

    @classmethod
    def unimplemented(cls, *parts: object) -> ServingError:
        return cls(Code.UNIMPLEMENTED, "".join(str(p) for p in parts))
