"""An upstream's failures → ours: error bodies in every shape engines send, and transport errors.

OpenAI's envelope keeps its own `code`, `param` and `type` (a vLLM or a second vlserve
answering `context_length_exceeded` reaches the client with that code); LMDeploy's flat
errors and FastAPI's `detail` keep the mapping by status.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import TypedDict

import aiohttp

from vlserve.errors import ErrorKind, ServiceError

log = logging.getLogger("vlserve.upstream")

_STATUS_KINDS = {
    400: ErrorKind.BAD_REQUEST, 404: ErrorKind.MODEL_NOT_FOUND, 413: ErrorKind.TOO_LARGE,
    415: ErrorKind.UNSUPPORTED_MEDIA, 422: ErrorKind.VALIDATION, 429: ErrorKind.OVERLOADED,
    503: ErrorKind.ENGINE_UNAVAILABLE, 504: ErrorKind.UPSTREAM_TIMEOUT,
}


# How engines word a prompt that does not fit, when they give no `context_length_exceeded`
# code: vLLM ("This model's maximum context length is 4096 tokens...", "The decoder prompt
# (length 5000) is longer than the maximum model length of 4096"), LMDeploy 0.16+ ("Input
# length (5000) must be smaller than the model context length (4096)", "The request exceeds
# the model context length"), and out of memory (PyTorch's "CUDA out of memory").
_DOES_NOT_FIT = re.compile(r"context length|maximum model length|max_model_len|session_len|exceeds? the model",
                           re.IGNORECASE)
_OUT_OF_MEMORY = re.compile(r"out of memory|OutOfMemory", re.IGNORECASE)


def _parse(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def upstream_message(data: object, body: bytes) -> str:
    """The human message from OpenAI's nested, LMDeploy's flat or FastAPI's `detail` errors."""
    if data is None:
        return body.decode("utf-8", "replace").strip()[:500]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("message"):
            return str(data["message"])
        detail = data.get("detail")
        if isinstance(detail, list):
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if detail:
            return str(detail)
    return json.dumps(data)[:500]


class EnvelopeFields(TypedDict, total=False):
    code: str
    error_type: str
    param: str


def _envelope_fields(data: object) -> EnvelopeFields:
    """`code`, `param` and `type` of OpenAI's envelope, when the upstream sent them as strings."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return {}
    fields: EnvelopeFields = {}
    if isinstance(error.get("code"), str) and error["code"]:
        fields["code"] = error["code"]
    if isinstance(error.get("type"), str) and error["type"]:
        fields["error_type"] = error["type"]
    if isinstance(error.get("param"), str):
        fields["param"] = error["param"]
    return fields


def upstream_error(status: int, body: bytes, headers: Mapping[str, str]) -> ServiceError:
    """Map an upstream error response to ours, keeping client errors' statuses."""
    data = _parse(body)
    message = upstream_message(data, body) or f"HTTP {status}"
    if status in (401, 403):  # the gateway's own credentials were refused: not the client's fault
        log.error("upstream refused the gateway's credentials (%d): %s", status, message)
        return ServiceError(ErrorKind.UPSTREAM_ERROR, "The model engine refused the gateway's credentials.")
    if _OUT_OF_MEMORY.search(message):
        return ServiceError(ErrorKind.ENGINE_OUT_OF_MEMORY, f"The model engine ran out of memory for this request: "
                            f"{message}")
    if status >= 500 and status not in _STATUS_KINDS:
        return ServiceError(ErrorKind.UPSTREAM_ERROR, f"The model engine failed (HTTP {status}): {message}")
    kind = _STATUS_KINDS.get(status, ErrorKind.BAD_REQUEST)
    if status == 400 and _DOES_NOT_FIT.search(message):
        kind = ErrorKind.CONTEXT_TOO_LONG  # OpenAI's code for it, which clients act on
    retry = {"Retry-After": headers["Retry-After"]} if status in (429, 503) and "Retry-After" in headers else None
    return ServiceError(kind, message, status=status, headers=retry, **_envelope_fields(data))


def transport_error(exc: BaseException) -> ServiceError:
    """Transport failures → 503 (can't connect), 504 (too slow), 502 (broke mid-way)."""
    # ClientOSError and ServerDisconnectedError before any answer: a pooled connection the
    # engine closed when it went away, or a reset. (Mid-stream breaks are handled by the relay.)
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        log.warning("upstream unreachable: %s", exc)
        return ServiceError(ErrorKind.ENGINE_UNAVAILABLE, "The model engine is unreachable.",
                            headers={"Retry-After": "5"})
    if isinstance(exc, TimeoutError):
        return ServiceError(ErrorKind.UPSTREAM_TIMEOUT, "The model engine did not answer in time.")
    log.warning("upstream failed: %r", exc)
    return ServiceError(ErrorKind.UPSTREAM_ERROR, f"The model engine failed ({type(exc).__name__}).")
