"""LMDeploy's rough edges, smoothed over so clients see OpenAI's behaviour.

From LMDeploy's sources (0.11.1 `serve/async_engine.py`, 0.16 `serve/openai/errors.py`)
and a recording of 0.18.0 (tests/fixtures/lmdeploy-0.18.0/):
- errors are flat `{"message", "type", "code": <int>, "object": "error"}` instead of
  OpenAI's `{"error": {...}}`, also inside a stream that has started (the openai SDK only
  raises on an `error` key, so it would silently take them for chunks);
- engine failures come back as HTTP 200 with `finish_reason: "error"` and a canned text
  ("internal error happened, status code ...");
- up to 0.15, a prompt that fills the session comes back as HTTP 200 with empty content,
  `finish_reason: "length"` and no completion tokens.
"""

from __future__ import annotations

import json
from typing import Any, cast

from vlserve.engines.upstream.errors import upstream_error
from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import Completion
from vlserve.sse import payload_of

MARKER = b'"error'  # in every event that may need translating; absent from ordinary chunks


def checked_completion(body: object) -> Completion:
    """A non-streamed 200 answer, checked to be a completion: raises for one that is really
    a failure. Fields beyond the choices pass through as the engine wrote them."""
    if not isinstance(body, dict):
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's answer was not a JSON object.")
    choices = body.get("choices")
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's answer had no list of choices.")
    choice = choices[0] if choices else {}
    # A chat answer's text is in `message.content`, the completions API's in `text`.
    text = (choice.get("message") or {}).get("content") or choice.get("text")
    if choice.get("finish_reason") == "error":
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, f"The engine failed: {text or 'no detail'}")
    usage = body.get("usage") or {}
    if choice.get("finish_reason") == "length" and not text and usage.get("completion_tokens") == 0:
        raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The prompt ({usage.get('prompt_tokens', '?')} tokens) "
                           "leaves no room to answer in the engine's context (its session length).",
                           param="messages")
    return cast(Completion, body)


def _error_event(payload: dict[str, Any]) -> ServiceError | None:
    """Our error for an event that is one, else None."""
    error = payload.get("error")
    if isinstance(error, str):
        return ServiceError(ErrorKind.UPSTREAM_ERROR, f"The engine failed: {error}")
    if "choices" not in payload and (payload.get("object") == "error" or "message" in payload):
        code = payload.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        return upstream_error(status, json.dumps(payload).encode(), {})
    for choice in payload.get("choices") or []:
        if isinstance(choice, dict) and choice.get("finish_reason") == "error":
            text = (choice.get("delta") or {}).get("content") or "no detail"
            return ServiceError(ErrorKind.UPSTREAM_ERROR, f"The engine failed: {text}")
    return None


def error_in_event(event: bytes) -> ServiceError | None:
    """Our error for a stream event that is an error in one of LMDeploy's shapes (or an
    engine's bare `"error": "text"`), else None. OpenAI-shaped error events pass as they are."""
    if MARKER not in event:
        return None
    payload = payload_of(event)
    if isinstance(payload, dict) and not isinstance(payload.get("error"), dict):
        return _error_event(payload)
    return None
