"""One closed set of error kinds, one exception type, one renderer of OpenAI's envelope.

Every route, middleware and stream reports failures through `ServiceError`, so a client
always gets `{"error": {"message", "type", "param", "code"}}` with the status from the
table below, never a stack trace. This module imports no web framework: engines and media
raise these errors; `routes/errors.py` renders them as HTTP responses.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from vlserve import sse


class ErrorKind(Enum):
    """(HTTP status, OpenAI error type, machine-readable code)."""

    BAD_REQUEST = (400, "invalid_request_error", "bad_request")
    INVALID_JSON = (400, "invalid_request_error", "invalid_json")
    INVALID_IMAGE = (400, "invalid_request_error", "invalid_image")
    INVALID_PDF = (400, "invalid_request_error", "invalid_pdf")
    IMAGE_FETCH_REFUSED = (400, "invalid_request_error", "image_url_refused")
    IMAGE_FETCH_FAILED = (400, "invalid_request_error", "image_fetch_failed")
    CONTEXT_TOO_LONG = (400, "invalid_request_error", "context_length_exceeded")
    UNAUTHORIZED = (401, "authentication_error", "invalid_api_key")
    MODEL_NOT_ALLOWED = (403, "permission_error", "model_not_allowed")
    FORBIDDEN = (403, "permission_error", "forbidden")
    MODEL_NOT_FOUND = (404, "invalid_request_error", "model_not_found")
    ROUTE_NOT_FOUND = (404, "invalid_request_error", "not_found")
    METHOD_NOT_ALLOWED = (405, "invalid_request_error", "method_not_allowed")
    REQUEST_TIMEOUT = (408, "invalid_request_error", "request_timeout")
    TOO_LARGE = (413, "invalid_request_error", "payload_too_large")
    UNSUPPORTED_MEDIA = (415, "invalid_request_error", "unsupported_media_type")
    HEADERS_TOO_LARGE = (431, "invalid_request_error", "request_header_fields_too_large")
    VALIDATION = (422, "invalid_request_error", "validation_error")
    OVERLOADED = (429, "rate_limit_error", "overloaded")
    RATE_LIMITED = (429, "rate_limit_error", "rate_limit_exceeded")        # a key's per-minute limits
    QUOTA_EXCEEDED = (429, "insufficient_quota", "insufficient_quota")     # a key's per-day limits
    INTERNAL = (500, "server_error", "internal_error")
    UPSTREAM_ERROR = (502, "upstream_error", "bad_gateway")
    ENGINE_UNAVAILABLE = (503, "service_unavailable", "engine_unavailable")
    ENGINE_OUT_OF_MEMORY = (503, "service_unavailable", "engine_out_of_memory")
    LIMITS_UNAVAILABLE = (503, "service_unavailable", "limits_unavailable")
    TOO_MANY_CONNECTIONS = (503, "service_unavailable", "too_many_connections")
    UPSTREAM_TIMEOUT = (504, "timeout_error", "upstream_timeout")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def type(self) -> str:
        return self.value[1]

    @property
    def code(self) -> str:
        return self.value[2]


class ServiceError(Exception):
    """A failure with a kind (status, type, code) and a message a person understands."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        # An upstream 4xx keeps its own status (e.g. 422) even when no kind matches it,
        # and an upstream's own OpenAI `code` and `type` (e.g. context_length_exceeded).
        self.status = status or kind.status
        self.code = code or kind.code
        self.type = error_type or kind.type
        self.headers = headers or {}
        self.extra = extra or {}  # more fields for the error object (e.g. a model's raw output)

    @property
    def prompt_too_big(self) -> bool:
        """The engine could not take the prompt: it overflows the context (whoever said
        so, in OpenAI's code) or the engine's memory. Smaller images may fit."""
        return self.code == ErrorKind.CONTEXT_TOO_LONG.code or self.kind is ErrorKind.ENGINE_OUT_OF_MEMORY

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code, **self.extra}}

    def sse_event(self) -> bytes:
        """The final event of a stream that fails after it has started.

        The openai SDK raises an APIError when a chunk carries an `error` key.
        """
        return sse.frame(self.body())
