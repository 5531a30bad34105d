"""Retry smaller: a request whose images did not fit the engine, sent again with each image
at a quarter of its pixels (half of each side).

An engine refuses a prompt that overflows its context or its memory; with images, the
images are nearly always what overflowed, and the user could only guess a smaller size.
`Inference` (engine_call.py) asks for the smaller request once, before any byte reached
the client, and only for an error that says the prompt did not fit
(`ServiceError.prompt_too_big`); a text-only request is never sent again. The answer says
it was shrunk: the `X-VLServe-Images-Shrunk` header (observability.py) and `images_shrunk`
in its usage object.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import cast

from vlserve.engines.base import EngineRequest
from vlserve.gateway.request_builder import pixel_bounds
from vlserve.media import MediaNormalizer
from vlserve.openai_types import ChatMessage, ContentPart, EngineBody
from vlserve.sse import frame, payload_of, split_keeping_ends

PIXELS_KEPT = 0.25  # of each image's pixels: half of each side
USAGE_NOTE = "images_shrunk"  # in the usage object: the share of pixels the images kept
_USAGE = re.compile(rb'"usage"\s*:\s*\{')


class ImageShrinker:
    def __init__(self, media: MediaNormalizer) -> None:
        self._media = media

    async def smaller(self, request: EngineRequest) -> EngineRequest | None:
        """The request with every image at a quarter of the pixels it reached the engine
        with; None when it has no image to shrink."""
        messages = request.body.get("messages") or []
        parts = [part for message in messages for part in _content(message) if part["type"] == "image_url"]
        if request.kind != "chat" or not parts:
            return None
        cap = request.image_pixels[1] if request.image_pixels else self._media.policy.budget.max_pixels
        images = await asyncio.gather(*(self._media.smaller(_url(part), cap, PIXELS_KEPT) for part in parts))
        urls = {id(part): image.data_url for part, image in zip(parts, images, strict=True)}
        body = cast(EngineBody, {**request.body, "messages": [_with_urls(message, urls) for message in messages]})
        return replace(request, body=body, image_pixels=pixel_bounds([image.budget for image in images]),
                       image_ids=tuple(image.content_id for image in images))


def _content(message: ChatMessage) -> list[ContentPart]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _url(part: ContentPart) -> str:
    image_url = part.get("image_url")
    return image_url["url"] if image_url is not None else ""


def _with_urls(message: ChatMessage, urls: dict[int, str]) -> ChatMessage:
    content = _content(message)
    if not any(id(part) in urls for part in content):
        return message
    new: list[ContentPart] = []
    for part in content:
        image_url = part.get("image_url")
        if id(part) in urls and image_url is not None:
            part = {**part, "image_url": {**image_url, "url": urls[id(part)]}}
        new.append(part)
    return {**message, "content": new}


def note_in_usage(events: bytes) -> bytes:
    """Stream events with the shrink noted in any usage object they carry."""
    if not _USAGE.search(events):
        return events
    out = []
    for event, end in split_keeping_ends(events):
        payload = payload_of(event) if _USAGE.search(event) else None
        if isinstance(payload, dict) and isinstance(payload.get("usage"), dict):
            payload["usage"][USAGE_NOTE] = PIXELS_KEPT
            out.append(frame(payload))
        else:
            out.append(event + end)
    return b"".join(out)


