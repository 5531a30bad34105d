"""An upper bound on the tokens an engine call can use, known before it is sent.

A key's tokens-per-minute limit reserves this bound when the call is admitted and
settles to the engine's count when it ends, so the tokens admitted never exceed the limit:

- text: Qwen's tokenizer is byte-level BPE, so a token is at least one UTF-8 byte and the
  bytes of every string in the prompt (messages, tool definitions) bound its tokens;
  the chat template's own tokens are bounded per message;
- an image: the pixel budget it was prepared for, over the model's pixels per visual
  token (MEDIA_IMAGE_FACTOR squared), plus its start and end tokens;
- plus `max_tokens`; and never more than the context, which holds prompt and answer.
"""

from __future__ import annotations

from collections.abc import Iterator

from vlserve.openai_types import EngineBody, Kind, max_tokens_of

TEMPLATE_TOKENS_PER_MESSAGE = 8  # <|im_start|>, the role, <|im_end|>, newlines
TEMPLATE_TOKENS_PER_REQUEST = 32  # the assistant's turn start, a thinking block's marks
_MEDIA_KEYS = ("image_url", "video_url")


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, except media URLs (their pixels are counted instead)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _MEDIA_KEYS:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


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
        text = sum(len(s.encode()) for s in _strings(body.get("prompt", "")))
        overhead = TEMPLATE_TOKENS_PER_REQUEST
    else:
        messages = body.get("messages", [])
        text = sum(len(s.encode()) for s in _strings([messages, body.get("tools", [])]))
        overhead = TEMPLATE_TOKENS_PER_REQUEST + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    bound = text + overhead + visuals * tokens_per_visual + (max_tokens_of(body) or context)
    return min(bound, context)
