"""OpenAI's shapes as the gateway and the engines pass them to each other: the body an
engine is sent, its messages and content parts, and the answers and chunks it gives back.

TypedDicts, because these travel as JSON (to an upstream as it is, to the local engine
as a dict) and a class per message would cost every request a conversion; typed, so a
misspelt field is a mypy error. Only the fields vlserve reads or writes are listed: other
fields a client sends (an engine's own sampling options) pass through untouched, which is
what `Passthrough` marks.
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypedDict

# A value the gateway forwards without reading it: a tool's JSON Schema, an engine's own
# option, a logprobs object. The one place such values are typed as Any.
Passthrough = Any
JSONObject = dict[str, Passthrough]

Kind = Literal["chat", "text"]  # chat completions, or the completions API (a raw prompt)


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class MediaURL(TypedDict, total=False):
    url: Required[str]
    detail: str
    min_pixels: int
    max_pixels: int


class ContentPart(TypedDict, total=False):
    """One part of a message's content: `text`, `image_url` or `video_url`."""

    type: Required[str]
    text: str
    image_url: MediaURL
    video_url: MediaURL
    file: dict[str, str]  # a PDF (OpenAI's file part), turned into its pages' images before any engine sees it
    uuid: str  # vLLM's id of a media item, which the gateway may add (upstream/dialect.py)


Content = str | list[ContentPart] | None


class FunctionCall(TypedDict):
    name: str
    arguments: str


class ToolCall(TypedDict, total=False):
    id: Required[str]
    type: Required[str]
    function: Required[FunctionCall]
    index: int


class ChatMessage(TypedDict, total=False):
    role: Required[str]
    content: Content
    name: str
    tool_calls: list[ToolCall]
    tool_call_id: str
    reasoning_content: str
    reasoning: str  # the newer name of reasoning_content, which some clients read


class Delta(TypedDict, total=False):
    """What one chunk of a streamed chat answer adds to the message."""

    role: str
    content: str | None
    reasoning_content: str
    reasoning: str
    tool_calls: list[ToolCall]


class FunctionSpec(TypedDict, total=False):
    name: Required[str]
    description: str
    parameters: JSONObject  # a JSON Schema
    strict: bool


class Tool(TypedDict):
    type: str
    function: FunctionSpec


class StreamOptions(TypedDict, total=False):
    include_usage: bool


class EngineBody(TypedDict, total=False):
    """What an engine is sent: the client's request, validated, with the gateway's
    defaults filled in. `messages` for chat, `prompt` for the completions API."""

    model: Required[str]
    messages: list[ChatMessage]
    prompt: str | list[str]
    stream: bool
    stream_options: StreamOptions
    max_tokens: int
    max_completion_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    n: int
    stop: str | list[str]
    tools: list[Tool]
    tool_choice: str | JSONObject
    response_format: JSONObject
    logprobs: bool | int
    top_logprobs: int
    echo: bool
    suffix: str
    best_of: int
    ignore_eos: bool
    repetition_penalty: float
    mm_processor_kwargs: JSONObject


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(TypedDict, total=False):
    """Chat completions' `logprobs`: one entry per generated token."""

    content: list[TokenLogprob] | None
    refusal: None


class TextLogprobs(TypedDict):
    """The completions API's (legacy) `logprobs`."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class Choice(TypedDict, total=False):
    """One choice of an answer: `message` (chat), `text` (completions API) or, in a chunk,
    `delta`."""

    index: Required[int]
    message: ChatMessage
    delta: Delta
    text: str
    logprobs: ChatLogprobs | TextLogprobs | None
    finish_reason: str | None


class Completion(TypedDict, total=False):
    """A whole answer (`chat.completion` or `text_completion`), or one chunk of a stream."""

    id: str
    object: str
    created: int
    model: str
    choices: Required[list[Choice]]
    usage: Usage | None


def usage_from(value: object) -> Usage | None:
    """An engine's usage object, checked: None unless it has the token counts."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    total = value.get("total_tokens")
    # Other fields an engine reports (prompt_tokens_details, ...) are kept as they are.
    checked: Usage = {**value, "prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": total if isinstance(total, int) else prompt + completion}
    return checked


def max_tokens_of(body: EngineBody) -> int | None:
    """The client's limit on generated tokens: `max_completion_tokens` (OpenAI's newer
    name) wins over `max_tokens`; None when it set neither."""
    return body.get("max_completion_tokens") or body.get("max_tokens")


def text_of(content: Content) -> str:
    """The text of a message's content: the string, or its text parts joined."""
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content)
    return content or ""
