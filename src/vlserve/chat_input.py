"""Validated client requests → the dict an engine receives.

Images become data URLs (through the media module), `model` becomes the engine's id,
and settings fill only the sampling fields the client left out.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .errors import ErrorKind, ServiceError
from .media import MediaNormalizer, NormalizedImage
from .schemas import ChatCompletionRequest, SamplingFields


def apply_defaults(request: dict[str, Any], settings: Settings) -> dict[str, Any]:
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if limit is not None and limit >= settings.max_model_len:
        raise ServiceError(ErrorKind.BAD_REQUEST, f"max_tokens={limit} does not fit in the model's context "
                           f"of {settings.max_model_len} tokens (MAX_MODEL_LEN).", param="max_tokens")
    if limit is None:
        request["max_tokens"] = min(settings.max_tokens, settings.max_model_len - 1)
    request.setdefault("temperature", settings.temperature)
    request.setdefault("top_p", settings.top_p)
    if settings.top_k:
        request.setdefault("top_k", settings.top_k)
    return request


def sampling_dict(fields: SamplingFields) -> dict[str, Any]:
    return fields.model_dump(include=set(SamplingFields.model_fields), exclude_none=True)


async def normalize_images(messages: list[dict[str, Any]], media: MediaNormalizer) -> list[NormalizedImage]:
    """Replace every image_url in `messages` (in place) by a validated data URL."""
    parts = [part for message in messages if isinstance(message.get("content"), list)
             for part in message["content"] if part.get("type") == "image_url"]
    for part in parts:
        if not (part.get("image_url") or {}).get("url"):
            raise ServiceError(ErrorKind.BAD_REQUEST, "An image_url part has no url.", param="messages")
    images = await media.normalize_many([part["image_url"]["url"] for part in parts])
    for part, image in zip(parts, images, strict=True):
        part["image_url"]["url"] = image.data_url
    return images


async def build_chat_request(body: ChatCompletionRequest, engine_model: str, settings: Settings,
                             media: MediaNormalizer) -> dict[str, Any]:
    request = body.model_dump(exclude_none=True)
    await normalize_images(request["messages"], media)
    request["model"] = engine_model
    return apply_defaults(request, settings)


def simple_messages(prompt: str, image: NormalizedImage | None, system_prompt: str | None) -> list[dict[str, Any]]:
    """The chat messages behind /infer and /analyze: [system], user(image?, text)."""
    content: list[dict[str, Any]] = []
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image.data_url}})
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages
