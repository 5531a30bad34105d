"""One closed set of error kinds, one exception type, one renderer of OpenAI's envelope.

Every route, middleware and stream reports failures through `ServiceError`, so a client
always gets `{"error": {"message", "type", "param", "code"}}` with the status from the
table below, never a stack trace.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("vlserve.errors")


class ErrorKind(Enum):
    """(HTTP status, OpenAI error type, machine-readable code)."""

    BAD_REQUEST = (400, "invalid_request_error", "bad_request")
    INVALID_JSON = (400, "invalid_request_error", "invalid_json")
    INVALID_IMAGE = (400, "invalid_request_error", "invalid_image")
    IMAGE_FETCH_REFUSED = (400, "invalid_request_error", "image_url_refused")
    IMAGE_FETCH_FAILED = (400, "invalid_request_error", "image_fetch_failed")
    CONTEXT_TOO_LONG = (400, "invalid_request_error", "context_length_exceeded")
    UNAUTHORIZED = (401, "authentication_error", "invalid_api_key")
    MODEL_NOT_FOUND = (404, "invalid_request_error", "model_not_found")
    ROUTE_NOT_FOUND = (404, "invalid_request_error", "not_found")
    METHOD_NOT_ALLOWED = (405, "invalid_request_error", "method_not_allowed")
    TOO_LARGE = (413, "invalid_request_error", "payload_too_large")
    UNSUPPORTED_MEDIA = (415, "invalid_request_error", "unsupported_media_type")
    VALIDATION = (422, "invalid_request_error", "validation_error")
    OVERLOADED = (429, "rate_limit_error", "overloaded")
    INTERNAL = (500, "server_error", "internal_error")
    UPSTREAM_ERROR = (502, "upstream_error", "bad_gateway")
    ENGINE_UNAVAILABLE = (503, "service_unavailable", "engine_unavailable")
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
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        # An upstream 4xx keeps its own status (e.g. 422) even when no kind matches it.
        self.status = status or kind.status
        self.headers = headers or {}
        self.extra = extra or {}  # more fields for the error object (e.g. a model's raw output)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind.type,
                          "param": self.param, "code": self.kind.code, **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse_event(self) -> bytes:
        """The final event of a stream that fails after it has started.

        The openai SDK raises an APIError when a chunk carries an `error` key.
        """
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def error_response(kind: ErrorKind, message: str, **kwargs: Any) -> JSONResponse:
    return ServiceError(kind, message, **kwargs).response()


def _describe_validation(exc: RequestValidationError) -> tuple[ErrorKind, str, str | None]:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return ErrorKind.INVALID_JSON, f"The request body is not valid JSON ({detail}).".replace(" ()", ""), None
    parts = []
    for error in errors[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc)
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return ErrorKind.BAD_REQUEST, "Invalid request: " + "; ".join(parts), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        kind, message, param = _describe_validation(exc)
        return error_response(kind, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(ErrorKind.ROUTE_NOT_FOUND, f"No route {request.url.path}.")
        if exc.status_code == 405:
            return error_response(ErrorKind.METHOD_NOT_ALLOWED,
                                  f"{request.method} is not allowed on {request.url.path}.")
        if exc.status_code == 413:
            return error_response(ErrorKind.TOO_LARGE, str(exc.detail))
        kind = ErrorKind.BAD_REQUEST if exc.status_code < 500 else ErrorKind.INTERNAL
        return error_response(kind, str(exc.detail), status=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(ErrorKind.INTERNAL, "Internal error; it has been logged.")
