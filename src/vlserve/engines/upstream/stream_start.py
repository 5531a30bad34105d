"""The opening of an upstream stream with images, read before the client gets a byte.

Engines do not always refuse a prompt that does not fit with an error status: LMDeploy up
to 0.15 answers 200 with one empty chunk and `finish_reason: "length"` (its session is
exhausted), and 0.16+ may start the stream and then send an error event when the engine
finds the input too long. For a request with images, the first events are read until the
answer has begun (content, reasoning or a tool call) or ended: one that ended without a
word, or with an error that says the prompt did not fit, raises that error while nothing
has reached the client, so the request can be sent again with smaller images
(gateway/engine_call.py). Otherwise the bytes read are relayed first, as they came.
Text-only streams are not read ahead (nothing smaller could be sent).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from vlserve.engines.upstream.errors import upstream_error
from vlserve.errors import ErrorKind, ServiceError
from vlserve.sse import EventSplitter, payload_of

_ANSWER_FIELDS = ("content", "reasoning_content", "reasoning", "tool_calls")


# An answer may end empty at `length` on its own only when it may have a token or two.
_ENOUGH_TO_SAY_SOMETHING = 8


async def read_opening(chunks: AsyncIterator[bytes], max_tokens: int | None) -> bytes:
    """The bytes up to the event that begins (or ends) the answer; raises the engine's
    error when the stream says the prompt did not fit."""
    empty_means_full = max_tokens is None or max_tokens >= _ENOUGH_TO_SAY_SOMETHING
    splitter = EventSplitter()
    read: list[bytes] = []
    async for chunk in chunks:
        read.append(chunk)
        for event in splitter.feed(chunk):
            payload = payload_of(event)
            if not isinstance(payload, dict):  # [DONE], or not an answer's event
                return b"".join(read)
            error = _did_not_fit(payload, empty_means_full)
            if error is not None:
                raise error
            if _begins_or_ends(payload):
                return b"".join(read)
    return b"".join(read)


def _begins_or_ends(payload: dict[str, Any]) -> bool:
    if "error" in payload or "choices" not in payload:
        return True
    for choice in payload.get("choices") or []:
        delta = choice.get("delta") or {} if isinstance(choice, dict) else {}
        if any(delta.get(field) for field in _ANSWER_FIELDS) or choice.get("finish_reason"):
            return True
    return False


def _did_not_fit(payload: dict[str, Any], empty_means_full: bool) -> ServiceError | None:
    """The error for an event that says the prompt did not fit, else None."""
    if "choices" not in payload:  # an error event, in OpenAI's or LMDeploy's flat shape
        error = payload.get("error")
        body = error if isinstance(error, dict) else payload
        code = body.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 400
        refusal = upstream_error(status, json.dumps({"error": body}).encode(), {})
        return refusal if refusal.prompt_too_big else None
    choices = payload.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = first.get("delta") or {}
    said_nothing = not any(delta.get(field) for field in _ANSWER_FIELDS)
    if empty_means_full and first.get("finish_reason") == "length" and said_nothing:
        return ServiceError(ErrorKind.CONTEXT_TOO_LONG, "The prompt leaves no room to answer "
                            "in the engine's context (its session length).", param="messages")
    return None
