"""Builders for OpenAI's chat completion objects and SSE framing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

DONE = b"data: [DONE]\n\n"


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, model: str, message: dict[str, Any], finish_reason: str,
               usage_: dict[str, int]) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_,
    }


def chunk(cid: str, model: str, delta: dict[str, Any], finish_reason: str | None,
          with_usage_field: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        obj["usage"] = None
    return obj


def usage_chunk(cid: str, model: str, usage_: dict[str, int]) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "choices": [], "usage": usage_}
