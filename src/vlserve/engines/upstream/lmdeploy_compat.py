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
from typing import Any

from vlserve.engines.upstream.errors import upstream_error
from vlserve.errors import ErrorKind, ServiceError
from vlserve.sse import EVENT_END

_MARKER = b'"error'  # in every event that may need translating; absent from ordinary chunks


def check_completion(body: Any) -> None:
    """Raise for a non-streamed 200 answer that is really a failure."""
    if not isinstance(body, dict):
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, "The engine's answer was not a JSON object.")
    choice = (body.get("choices") or [{}])[0] or {}
    # A chat answer's text is in `message.content`, the completions API's in `text`.
    text = (choice.get("message") or {}).get("content") or choice.get("text")
    if choice.get("finish_reason") == "error":
        raise ServiceError(ErrorKind.UPSTREAM_ERROR, f"The engine failed: {text or 'no detail'}")
    usage = body.get("usage") or {}
    if choice.get("finish_reason") == "length" and not text and usage.get("completion_tokens") == 0:
        raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The prompt ({usage.get('prompt_tokens', '?')} tokens, images "
                           "included) leaves no room to answer in the engine's context (its session length).",
                           param="messages")


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


def usage_in(events: bytes, report: Any) -> None:
    """Hand the last `usage` object found in these SSE events to `report`.

    Only the event that holds the last `"usage"` is parsed (found with byte searches,
    not by splitting the whole read into events).
    """
    at = events.rfind(b'"usage"')
    while at >= 0:
        start = events.rfind(b"data:", 0, at)
        end = min((i for i in (events.find(b"\n\n", at), events.find(b"\r\n\r\n", at)) if i >= 0),
                  default=len(events))
        try:
            usage = json.loads(events[start + 5:end]).get("usage") if start >= 0 else None
        except (ValueError, AttributeError):
            usage = None
        if isinstance(usage, dict):
            report(usage)
            return
        at = events.rfind(b'"usage"', 0, max(start, 0))


class StreamTranslator:
    """Passes SSE bytes through untouched, except events that are errors in LMDeploy's
    shapes: those become our `{"error": {...}}` event, and the stream ends there.

    Only a chunk that contains the marker is split into events, so ordinary chunks cost
    one substring search.
    """

    def __init__(self) -> None:
        self._pending = b""
        self.failed = False

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        # Events end with a blank line: "\n\n", or "\r\n\r\n" from servers that use CRLF.
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if cut == 0:
            self._pending = data
            return b""
        ready, self._pending = data[:cut], data[cut:]
        if _MARKER not in ready:
            return ready
        out = []
        for event in EVENT_END.split(ready)[:-1]:
            translated = self._translate(event)
            out.append(translated)
            if self.failed:
                break
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _translate(self, event: bytes) -> bytes:
        if _MARKER in event and event.startswith(b"data:"):
            try:
                payload = json.loads(event[5:])
            except ValueError:
                payload = None
            if isinstance(payload, dict) and not isinstance(payload.get("error"), dict):
                error = _error_event(payload)
                if error is not None:
                    self.failed = True
                    return error.sse_event()
        return event + b"\n\n"
