"""Between OpenAI-shaped requests and transformers' `generate()`: messages and images in,
sampling arguments, and token ids streamed out of the worker thread."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from typing import Any

from ..errors import ErrorKind, ServiceError

log = logging.getLogger("vlserve.local")

class QueueStreamer:
    """A transformers streamer that hands each generated token id to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self._loop, self._queue = loop, queue
        self._seen_prompt = False

    def put(self, value) -> None:
        if not self._seen_prompt:  # generate() first hands over the prompt itself
            self._seen_prompt = True
            return
        for token in value.reshape(-1).tolist():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, token)

    def end(self) -> None:
        pass

    def finish(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)


def consume_exception(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("generation ended with %r after its client left", future.exception())


def eos_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


GREEDY_BELOW = 1e-5  # a temperature this small is greedy decoding (dividing by it overflows)


def sampling_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    temperature = request.get("temperature")
    if temperature is not None and temperature < GREEDY_BELOW:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    kwargs: dict[str, Any] = {"do_sample": True}
    if temperature is not None:
        kwargs["temperature"] = float(temperature)
    if request.get("top_p") is not None:
        kwargs["top_p"] = float(request["top_p"])
    top_k = request.get("top_k")
    if top_k is not None:
        kwargs["top_k"] = int(top_k) or None  # 0 means "no top-k", as in vLLM
    if request.get("repetition_penalty") is not None:
        kwargs["repetition_penalty"] = float(request["repetition_penalty"])
    return kwargs


def text_length(messages: list[dict[str, Any]]) -> int:
    """Characters of text in OpenAI messages (string content and text parts)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text") or "") for part in content if isinstance(part, dict))
    return total


def to_processor_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI messages (images already data URLs) → chat-template messages + PIL images."""
    from PIL import Image

    out, images = [], []
    for message in messages:
        role = "system" if message["role"] == "developer" else message["role"]
        content = message.get("content")
        if role == "tool" and isinstance(content, list):  # the template writes a tool's result as text
            content = "".join(part.get("text") or "" for part in content)
        if content is None or isinstance(content, str):
            out.append({**message, "role": role, "content": content or ""})
            continue
        parts = []
        for part in content:
            if part["type"] == "text":
                parts.append({"type": "text", "text": part.get("text") or ""})
            elif part["type"] == "video_url":
                raise ServiceError(ErrorKind.UNSUPPORTED_MEDIA, "Video is not supported by the local engine; "
                                   "serve the model with LMDeploy or vLLM (LMDEPLOY_BASE_URL) for video.")
            elif part["type"] == "image_url":
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                parts.append({"type": "image"})
        out.append({**message, "role": role, "content": parts})
    return out, images
