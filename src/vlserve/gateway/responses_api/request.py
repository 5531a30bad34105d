"""A Responses API request → the chat completion request that asks the same.

Input items map onto chat messages: `instructions` and system/developer items become
system messages, `input_text`/`input_image` parts become text/image_url parts (the
image then goes through the same media policy as any chat image), `function_call`
items become an assistant message's `tool_calls` (consecutive calls are one message:
parallel calls), `function_call_output` items become tool messages. Reasoning items
from an earlier turn are not sent back (Qwen's chat template drops earlier reasoning
too). Whatever cannot be served here is a 400 that names the field.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from vlserve.errors import ErrorKind, ServiceError
from vlserve.openai_types import ChatMessage, ContentPart, FunctionSpec, MediaURL, Tool, ToolCall

# A client's JSON before it is checked: every value is narrowed before it is used.
ClientJSON = dict[str, object]

LOGPROBS_INCLUDE = "message.output_text.logprobs"

# Fields of the Responses API with no chat counterpart that are fine to accept: they
# describe storage, caching or billing, which a self-hosted gateway has no use for.
_ACCEPTED_ONLY = {"store", "metadata", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
                  "prompt_cache_options", "service_tier", "truncation", "include", "max_tool_calls",
                  "stream_options"}
# Chat fields the translation itself sets: a client's own value would contradict it.
_SET_BY_TRANSLATION = {"messages", "logprobs", "top_logprobs", "response_format", "stream", "best_of", "echo"}


class ResponsesRequest(BaseModel):
    """The fields of `POST /v1/responses` that are validated here; unknown ones (an
    engine's own sampling options such as top_k) pass through to the engine."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[ClientJSON]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    tools: list[ClientJSON] | None = None
    tool_choice: str | ClientJSON | None = None
    parallel_tool_calls: bool | None = None
    text: ClientJSON | None = None
    reasoning: ClientJSON | None = None
    include: list[str] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = None
    conversation: str | ClientJSON | None = None
    background: bool | None = None
    prompt: ClientJSON | None = None

    @property
    def wants_logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or []) or self.top_logprobs is not None


def _bad(message: str, param: str) -> ServiceError:
    return ServiceError(ErrorKind.BAD_REQUEST, message, param=param)


def to_chat_request(request: ResponsesRequest) -> ClientJSON:
    """The chat completion body for this Responses request (validated by the caller)."""
    _refuse_unservable(request)
    # Unknown fields (an engine's own options: top_k, repetition_penalty, ...) pass through.
    body: ClientJSON = {key: value for key, value in (request.model_extra or {}).items()
                            if key not in _ACCEPTED_ONLY | _SET_BY_TRANSLATION}
    # The caller validates the result as a chat request (ChatCompletionRequest).
    body.update(model=request.model, messages=_messages(request), stream=request.stream)
    if request.stream:
        body["stream_options"] = {"include_usage": True}  # the final event carries usage
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                         ("parallel_tool_calls", "parallel_tool_calls")):
        if getattr(request, ours) is not None:
            body[theirs] = getattr(request, ours)
    if request.wants_logprobs:
        body.update(logprobs=True, top_logprobs=request.top_logprobs or 0)
    if request.tools:
        body["tools"] = [_tool(index, tool) for index, tool in enumerate(request.tools)]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    response_format = _response_format(request.text)
    if response_format is not None:
        body["response_format"] = response_format
    return body


def _refuse_unservable(request: ResponsesRequest) -> None:
    if (request.model_extra or {}).get("n", 1) != 1:
        raise _bad("n: a response has one answer; send several requests for several answers.", "n")
    if request.previous_response_id:
        raise _bad("previous_response_id: this server stores no responses; send the whole conversation in "
                   "`input` (earlier output items included).", "previous_response_id")
    if request.conversation:
        raise _bad("conversation: this server stores no conversations; send the whole conversation in `input`.",
                   "conversation")
    if request.background:
        raise _bad("background: responses run in the foreground here; use stream=true for long answers.",
                   "background")
    if request.prompt:
        raise _bad("prompt: stored prompt templates are not available on this server; send the text in "
                   "`instructions` and `input`.", "prompt")
    effort = (request.reasoning or {}).get("effort")
    if effort is not None:
        raise _bad(f"reasoning.effort={effort!r}: this model's reasoning is fixed by the checkpoint (a Thinking "
                   "model always reasons, an Instruct model does not); leave reasoning.effort unset.",
                   "reasoning.effort")
    unknown = [name for name in request.include or [] if name != LOGPROBS_INCLUDE
               and name != "reasoning.encrypted_content"]
    if unknown:
        raise _bad(f"include: {', '.join(unknown)} cannot be included here; supported: {LOGPROBS_INCLUDE} "
                   "(reasoning.encrypted_content is accepted: reasoning is sent in the clear).", "include")


def _messages(request: ResponsesRequest) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
        return messages
    for index, item in enumerate(request.input):
        _add_item(messages, item, f"input[{index}]")
    if not messages:
        raise _bad("input has no messages.", "input")
    return messages


def _add_item(messages: list[ChatMessage], item: object, where: str) -> None:
    if not isinstance(item, dict):
        raise _bad(f"{where} must be an object (a message or an output item).", where)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        call: ToolCall = {"id": _text_field(item, "call_id", where), "type": "function",
                          "function": {"name": _text_field(item, "name", where), "arguments": _arguments(item, where)}}
        last = messages[-1] if messages else None
        if last and last["role"] == "assistant":
            # The text and calls of one answer (or parallel calls) are one assistant turn.
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append({"role": "tool", "tool_call_id": _text_field(item, "call_id", where),
                         "content": _tool_output(item.get("output"), f"{where}.output")})
    elif kind == "reasoning":
        return  # an earlier turn's reasoning: the template leaves it out, so do we
    elif kind == "item_reference":
        raise _bad(f"{where}: item_reference needs stored items; this server stores none, so send the item itself.",
                   f"{where}.type")
    else:
        raise _bad(f"{where}: input items of type {kind!r} are not supported; use message, function_call and "
                   "function_call_output items.", f"{where}.type")


def _arguments(item: ClientJSON, where: str) -> str:
    """A call's arguments as the JSON text the model wrote (an object is written out)."""
    arguments = item.get("arguments")
    if arguments is None or arguments == "":
        return "{}"
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False)
    raise _bad(f"{where}.arguments must be a JSON string (or an object).", f"{where}.arguments")


def _text_field(item: ClientJSON, name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise _bad(f"{where}.{name} is required (a string).", f"{where}.{name}")
    return value


_ROLES = {"user", "assistant", "system", "developer"}


def _message(item: ClientJSON, where: str) -> ChatMessage:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise _bad(f"{where}.role must be one of {', '.join(sorted(_ROLES))}.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of content parts.", f"{where}.content")
    return {"role": role, "content": [_part(part, f"{where}.content[{index}]") for index, part in enumerate(content)]}


def _part(part: object, where: str) -> ContentPart:
    if not isinstance(part, dict):
        raise _bad(f"{where} must be an object (a content part).", f"{where}.type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        if part.get("file_id"):
            raise _bad(f"{where}.file_id: this server has no file storage; send image_url (an http(s) URL or a "
                       "data URL).", f"{where}.file_id")
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(f"{where}.image_url is required: an http(s) URL or a data URL.", f"{where}.image_url")
        image: MediaURL = {"url": url}
        if (detail := part.get("detail")) in ("low", "high", "auto"):
            image["detail"] = str(detail)
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":  # a PDF: its pages become images (gateway/documents.py)
        data = part.get("file_data")
        if not isinstance(data, str) or not data:
            raise _bad(f"{where}.file_data is required (data:application/pdf;base64,...): this server has no "
                       "file storage for file_id or file_url.", f"{where}.file_data")
        file = {"file_data": data}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise _bad(f"{where}: content parts of type {kind!r} are not supported; use input_text, input_image and "
               "input_file.", f"{where}.type")


def _tool_output(output: object, where: str) -> str:
    """A function's result, as the text the model reads."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = []
        for index, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                raise _bad(f"{where}[{index}]: a function's output may hold text only here; send images in a "
                           "user message.", f"{where}[{index}]")
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    if output is None:
        raise _bad(f"{where} is required.", where)
    return json.dumps(output, ensure_ascii=False)


def _tool(index: int, tool: ClientJSON) -> Tool:
    where = f"tools[{index}]"
    if tool.get("type") != "function":
        raise _bad(f"{where}: tools of type {tool.get('type')!r} are not available here (no hosted tools); "
                   "use function tools.", f"{where}.type")
    function: FunctionSpec = {"name": _text_field(tool, "name", where)}
    if isinstance(description := tool.get("description"), str):
        function["description"] = description
    if isinstance(parameters := tool.get("parameters"), dict):
        function["parameters"] = parameters
    if isinstance(strict := tool.get("strict"), bool):
        function["strict"] = strict
    return {"type": "function", "function": function}


def _tool_choice(choice: str | ClientJSON) -> str | ClientJSON:
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _bad("tool_choice must be none, auto, required or a function.", "tool_choice")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad(f"tool_choice of type {choice.get('type')!r} is not supported; name a function tool "
               '({"type": "function", "name": ...}).', "tool_choice")


def _response_format(text: ClientJSON | None) -> ClientJSON | None:
    fmt = (text or {}).get("format")
    if not fmt:
        return None
    if not isinstance(fmt, dict):
        raise _bad('text.format must be an object such as {"type": "json_schema", "name": ..., "schema": {...}}.',
                   "text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise _bad("text.format.schema is required for json_schema (a JSON Schema object).", "text.format.schema")
        schema: ClientJSON = {"name": fmt.get("name") or "answer", "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        return {"type": "json_schema", "json_schema": schema}
    raise _bad(f"text.format.type {kind!r} is not supported; use text, json_object or json_schema.",
               "text.format.type")
