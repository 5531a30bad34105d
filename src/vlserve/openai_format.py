"""Builders for OpenAI's chat and text completion objects (sse.py frames them for streams)."""

from __future__ import annotations

import time
import uuid

from vlserve.openai_types import ChatLogprobs, ChatMessage, Choice, Completion, Delta, Kind, TextLogprobs, Usage


def completion_id(kind: Kind = "chat") -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_choice(index: int, message: ChatMessage, finish_reason: str, logprobs: ChatLogprobs | None = None) -> Choice:
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}


def text_choice(index: int, text: str, finish_reason: str | None, logprobs: TextLogprobs | None = None) -> Choice:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def completion(cid: str, model: str, choices: list[Choice], usage_: Usage, kind: Kind = "chat") -> Completion:
    """A whole answer: `chat.completion`, or `text_completion` for the completions API."""
    return {"id": cid, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices, "usage": usage_}


def chunk(cid: str, model: str, delta: Delta, finish_reason: str | None,
          with_usage_field: bool, index: int = 0, logprobs: ChatLogprobs | None = None) -> Completion:
    obj: Completion = {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        obj["usage"] = None
    return obj


def text_chunk(cid: str, model: str, choice: Choice, with_usage_field: bool) -> Completion:
    obj: Completion = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model,
                       "choices": [choice]}
    if with_usage_field:
        obj["usage"] = None
    return obj


def usage_chunk(cid: str, model: str, usage_: Usage, kind: Kind = "chat") -> Completion:
    return {"id": cid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": usage_}
