"""An upper bound on the tokens an engine call can use, known before it is sent.

A key's tokens-per-minute limit reserves this bound when the call is admitted and
settles to the engine's count when it ends, so the tokens admitted never exceed the limit:

- text: Qwen's tokenizer is byte-level BPE, so a token is at least one UTF-8 byte and the
  bytes of the messages and tool definitions, as JSON, bound their tokens (the template
  renders tools and tool calls as JSON); the chat template's own text is bounded per
  message, and its tool instructions once when there are tools;
- an image: the pixel budget it was prepared for, over the model's pixels per visual
  token (MEDIA_IMAGE_FACTOR squared), plus its start and end tokens;
- plus `max_tokens`; and never more than the context, which holds prompt and answer.
"""

from __future__ import annotations

import json

from vlserve import json_bytes
from vlserve.openai_types import EngineBody, Kind, max_tokens_of

TEMPLATE_TOKENS_PER_MESSAGE = 32  # <|im_start|>, the role, <|im_end|>, <tool_response> tags, newlines
TEMPLATE_TOKENS_PER_REQUEST = 32  # the assistant's turn start, a thinking block's marks
TOOLS_TEMPLATE_TOKENS = 600       # Qwen's "# Tools ... <tool_call>" instructions: ~500 bytes
_MEDIA_KEYS = ("image_url", "video_url")


def _without_media(value: object) -> object:
    """A JSON value with media URLs left out (their pixels are counted instead)."""
    if isinstance(value, dict):
        return {key: _without_media(item) for key, item in value.items() if key not in _MEDIA_KEYS}
    if isinstance(value, list):
        return [_without_media(item) for item in value]
    return value


def _text_bytes(messages: object, media: bool = True) -> int:
    """UTF-8 bytes of the messages as compact JSON (orjson: the cost of json.dumps showed in
    profiles): never fewer than their text, which is what the template writes of them.
    Without `media` (no image or video parts) there are no URLs to leave out."""
    return len(json_bytes.dumps(_without_media(messages) if media else messages))


def _template_json_bytes(tools: object) -> int:
    """Bytes of tool definitions as the template writes them: JSON with a space after each
    separator and Python's float spellings, which is what `json.dumps` writes."""
    return len(json.dumps(tools, ensure_ascii=False).encode())


def visual_kinds(body: EngineBody) -> list[str]:
    """The type of each image and video part of a chat body, in order."""
    kinds = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            kinds += [part["type"] for part in content if isinstance(part, dict) and part.get("type") in _MEDIA_KEYS]
    return kinds


def token_bound(body: EngineBody, kind: Kind, *, visuals: int, tokens_per_visual: int, context: int) -> int:
    if kind == "text":
        text, overhead = _text_bytes(body.get("prompt", "")), TEMPLATE_TOKENS_PER_REQUEST
    else:
        messages, tools = body.get("messages", []), body.get("tools")
        text = _text_bytes(messages, media=visuals > 0)
        if tools:
            text += _template_json_bytes(tools) + TOOLS_TEMPLATE_TOKENS
        overhead = TEMPLATE_TOKENS_PER_REQUEST + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    bound = text + overhead + visuals * tokens_per_visual + (max_tokens_of(body) or context)
    return min(bound, context)
