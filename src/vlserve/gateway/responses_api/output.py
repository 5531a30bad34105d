"""Response objects and their output items, built from a chat completion's answer."""

from __future__ import annotations

import time
import uuid
from typing import Any

from vlserve.gateway.responses_api.request import ResponsesRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [], "status": status,
            "content": [{"type": "reasoning_text", "text": text}] if text else []}


def text_part(text: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": parts}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def responses_logprobs(chat_logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Chat's `logprobs.content` entries in the Responses shape (no nulls in `bytes`)."""
    entries = (chat_logprobs or {}).get("content") or []

    def one(entry: dict[str, Any]) -> dict[str, Any]:
        return {"token": entry.get("token", ""), "logprob": entry.get("logprob", 0.0),
                "bytes": entry.get("bytes") or list(str(entry.get("token", "")).encode())}

    return [{**one(entry), "top_logprobs": [one(top) for top in entry.get("top_logprobs") or []]}
            for entry in entries]


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    prompt, completion = chat_usage.get("prompt_tokens", 0), chat_usage.get("completion_tokens", 0)
    reasoning = ((chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0
    cached = ((chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": chat_usage.get("total_tokens", prompt + completion)}


def reasoning_of(message: dict[str, Any]) -> str | None:
    """A message's (or delta's) reasoning: `reasoning_content` (LMDeploy, vLLM up to 0.10,
    the local engine) or `reasoning` (newer vLLM)."""
    return message.get("reasoning_content") or message.get("reasoning")


def output_items(message: dict[str, Any], logprobs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A chat answer's message as output items: reasoning, then text, then function calls."""
    items = []
    reasoning = reasoning_of(message)
    if reasoning:
        items.append(reasoning_item(new_id("rs"), reasoning))
    if message.get("content"):
        items.append(message_item(new_id("msg"), [text_part(message["content"], responses_logprobs(logprobs))]))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        items.append(function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""),
                                        function.get("arguments") or "{}"))
    return items


def response_object(request: ResponsesRequest, response_id: str, created_at: float, model: str, *,
                    status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None,
                    finish_reason: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response object: the answer, and the request's settings as they were applied."""
    incomplete = {"reason": "max_output_tokens"} if finish_reason == "length" else None
    status = "incomplete" if incomplete and status == "completed" else status
    return {
        "id": response_id, "object": "response", "created_at": created_at, "model": model, "status": status,
        "completed_at": time.time() if status == "completed" else None,
        "error": error, "incomplete_details": incomplete, "output": output, "usage": usage,
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature, "top_p": request.top_p, "top_logprobs": request.top_logprobs,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "tool_choice": request.tool_choice or "auto", "tools": request.tools or [],
        "text": request.text or {"format": {"type": "text"}},
        "reasoning": {"effort": None, "summary": None}, "truncation": request.truncation or "disabled",
        "metadata": request.metadata or {}, "store": False,  # nothing is stored here
        "previous_response_id": None, "background": False, "user": (request.model_extra or {}).get("user"),
    }


def from_completion(request: ResponsesRequest, completion: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as a Response object."""
    choice = (completion.get("choices") or [{}])[0]
    return response_object(request, new_id("resp"), float(completion.get("created") or time.time()),
                           str(completion.get("model") or request.model), status="completed",
                           output=output_items(choice.get("message") or {}, choice.get("logprobs")),
                           usage=usage_of(completion.get("usage")), finish_reason=choice.get("finish_reason"))
