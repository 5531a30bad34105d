"""Rendering failures as HTTP: every error the app or a middleware meets becomes OpenAI's
envelope (`errors.ServiceError.body()`) with its status; a client that left gets 499."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.engine_call import ClientGone
from vlserve.server.observability import CLIENT_CLOSED_REQUEST

log = logging.getLogger("vlserve.errors")


def json_error(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def error_response(kind: ErrorKind, message: str, **kwargs: Any) -> JSONResponse:
    return json_error(ServiceError(kind, message, **kwargs))


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


def error_response_for(exc: Exception, method: str, path: str) -> Response:
    """The response for an exception a request ended in: FastAPI's handlers below and the
    hot routes (hot_routes.py) both answer with this, so every route fails alike."""
    if isinstance(exc, ServiceError):
        return json_error(exc)
    if isinstance(exc, ClientGone):
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if isinstance(exc, RequestValidationError):
        kind, message, param = _describe_validation(exc)
        return error_response(kind, message, param=param)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(ErrorKind.ROUTE_NOT_FOUND, f"No route {path}.")
        if exc.status_code == 405:
            return error_response(ErrorKind.METHOD_NOT_ALLOWED, f"{method} is not allowed on {path}.")
        if exc.status_code == 413:
            return error_response(ErrorKind.TOO_LARGE, str(exc.detail))
        kind = ErrorKind.BAD_REQUEST if exc.status_code < 500 else ErrorKind.INTERNAL
        return error_response(kind, str(exc.detail), status=exc.status_code)
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return error_response(ErrorKind.INTERNAL, "Internal error; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        return error_response_for(exc, request.method, request.url.path)

    for kind in (ServiceError, ClientGone, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handle)
