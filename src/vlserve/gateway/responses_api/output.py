"""Response objects and their output items, built from a chat completion's answer."""

from __future__ import annotations

import time
import uuid
from typing import Required, TypedDict

from vlserve.gateway.responses_api.request import ResponsesRequest
from vlserve.openai_types import (
    ChatLogprobs,
    ChatMessage,
    Choice,
    Completion,
    Delta,
    Passthrough,
    TextLogprobs,
    TokenLogprob,
    TopLogprob,
    Usage,
    usage_from,
)

# The Response object: its fields are OpenAI's; built whole by response_object().
ResponseObject = dict[str, object]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputText(TypedDict):
    type: str  # "output_text"
    text: str
    annotations: list[Passthrough]
    logprobs: list[TokenLogprob]


class ReasoningText(TypedDict):
    type: str  # "reasoning_text"
    text: str


class OutputItem(TypedDict, total=False):
    """One item of a Response's output: `reasoning`, `message` or `function_call`."""

    type: Required[str]
    id: Required[str]
    status: Required[str]
    summary: list[Passthrough]
    role: str
    content: list[OutputText] | list[ReasoningText]
    call_id: str
    name: str
    arguments: str


class ResponseUsage(TypedDict):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseError(TypedDict):
    code: str
    message: str


def reasoning_item(item_id: str, text: str, status: str = "completed") -> OutputItem:
    content: list[ReasoningText] = [{"type": "reasoning_text", "text": text}] if text else []
    return {"type": "reasoning", "id": item_id, "summary": [], "status": status, "content": content}


def text_part(text: str, logprobs: list[TokenLogprob] | None) -> OutputText:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def message_item(item_id: str, parts: list[OutputText], status: str = "completed") -> OutputItem:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": parts}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> OutputItem:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def responses_logprobs(chat_logprobs: ChatLogprobs | TextLogprobs | None) -> list[TokenLogprob]:
    """Chat's `logprobs.content` entries in the Responses shape (no nulls in `bytes`)."""
    chat: ChatLogprobs = chat_logprobs if chat_logprobs and "content" in chat_logprobs else {}  # type: ignore[assignment]
    entries = chat.get("content") or []

    def one(entry: TopLogprob) -> TopLogprob:
        token = str(entry.get("token", ""))  # an engine's logprobs: read leniently
        return {"token": token, "logprob": float(entry.get("logprob", 0.0)),
                "bytes": entry.get("bytes") or list(token.encode())}

    return [{**one(entry), "top_logprobs": [one(top) for top in entry.get("top_logprobs") or []]}
            for entry in entries]


def usage_of(chat_usage: Usage | None) -> ResponseUsage | None:
    if not chat_usage:
        return None
    prompt, completion = chat_usage["prompt_tokens"], chat_usage["completion_tokens"]
    details: dict[str, dict[str, int]] = chat_usage  # type: ignore[assignment]  # engines may add these
    reasoning = (details.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    cached = (details.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": chat_usage.get("total_tokens", prompt + completion)}


def reasoning_of(message: ChatMessage | Delta) -> str | None:
    """A message's (or delta's) reasoning: `reasoning_content` (LMDeploy, vLLM up to 0.10,
    the local engine) or `reasoning` (newer vLLM)."""
    return message.get("reasoning_content") or message.get("reasoning")


def output_items(message: ChatMessage, logprobs: ChatLogprobs | TextLogprobs | None) -> list[OutputItem]:
    """A chat answer's message as output items: reasoning, then text, then function calls."""
    items = []
    reasoning = reasoning_of(message)
    if reasoning:
        items.append(reasoning_item(new_id("rs"), reasoning))
    content = message.get("content")
    if isinstance(content, str) and content:
        items.append(message_item(new_id("msg"), [text_part(content, responses_logprobs(logprobs))]))
    for call in message.get("tool_calls") or []:
        function = call["function"]
        items.append(function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""),
                                        function.get("arguments") or "{}"))
    return items


def response_object(request: ResponsesRequest, response_id: str, created_at: float, model: str, *,
                    status: str, output: list[OutputItem], usage: ResponseUsage | None,
                    finish_reason: str | None = None, error: ResponseError | None = None) -> ResponseObject:
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


def from_completion(request: ResponsesRequest, completion: Completion) -> ResponseObject:
    """A whole chat completion as a Response object."""
    choice: Choice = completion["choices"][0] if completion["choices"] else {"index": 0}
    return response_object(request, new_id("resp"), float(completion.get("created") or time.time()),
                           str(completion.get("model") or request.model), status="completed",
                           output=output_items(choice.get("message") or {"role": "assistant"}, choice.get("logprobs")),
                           usage=usage_of(usage_from(completion.get("usage"))),
                           finish_reason=choice.get("finish_reason"))
