"""Validated client requests → the dict an engine receives.

Images become data URLs (through the media module), `model` becomes the engine's id,
and settings fill only the sampling fields the client left out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .config import Settings
from .errors import ErrorKind, ServiceError
from .media import ImageHints, MediaNormalizer, NormalizedImage, PixelBudget
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


_MEDIA_TYPES = ("image_url", "video_url")


async def normalize_media(messages: list[dict[str, Any]], media: MediaNormalizer) -> list[PixelBudget]:
    """Replace every image_url/video_url in `messages` (in place) by a validated data URL.

    Returns the pixel budget each image was prepared for.
    """
    parts = [part for message in messages if isinstance(message.get("content"), list)
             for part in message["content"] if part.get("type") in _MEDIA_TYPES]
    for part in parts:
        if not (part.get(part["type"]) or {}).get("url"):
            raise ServiceError(ErrorKind.BAD_REQUEST, f"A {part['type']} part has no url.", param="messages")
    media.check_count(len(parts))
    media.check_total([media.estimated_size(part[part["type"]]["url"]) for part in parts])
    hints = [_hints(part["image_url"]) if part["type"] == "image_url" else None for part in parts]
    results = await asyncio.gather(*(
        media.image(part["image_url"]["url"], hint) if hint else media.video(part["video_url"]["url"])
        for part, hint in zip(parts, hints, strict=True)))
    media.check_total([result.nbytes for result in results])
    for part, result in zip(parts, results, strict=True):
        # Engines get the data URL only (LMDeploy ignores our pixel hints; we applied them).
        kept = {"detail": part[part["type"]]["detail"]} if part[part["type"]].get("detail") else {}
        part[part["type"]] = {"url": result.data_url, **kept}
    return [media.policy.budget_for(hint) for hint in hints if hint is not None]


def _hints(image_url: dict[str, Any]) -> ImageHints:
    return ImageHints(image_url.get("detail"), image_url.get("min_pixels"), image_url.get("max_pixels"))


def mm_processor_kwargs(budgets: list[PixelBudget], form: str) -> dict[str, Any] | None:
    """The pixel budget in the form an upstream engine reads, so engine and gateway agree.

    LMDeploy 0.18 reads the per-modality form and silently ignores the flat one.
    """
    if not budgets or form == "off":
        return None
    bounds = {"min_pixels": min(b.min_pixels for b in budgets), "max_pixels": max(b.max_pixels for b in budgets)}
    return {"image": bounds} if form == "lmdeploy" else bounds


async def build_chat_request(body: ChatCompletionRequest, engine_model: str, settings: Settings,
                             media: MediaNormalizer) -> dict[str, Any]:
    request = body.model_dump(exclude_none=True)
    budgets = await normalize_media(request["messages"], media)
    request["model"] = engine_model
    if settings.engine_kind == "upstream" and "mm_processor_kwargs" not in request:
        kwargs = mm_processor_kwargs(budgets, settings.upstream_mm_kwargs)
        if kwargs:
            request["mm_processor_kwargs"] = kwargs
    return apply_defaults(request, settings)


def simple_messages(prompt: str, images: list[NormalizedImage], system_prompt: str | None) -> list[dict[str, Any]]:
    """The chat messages behind /infer and /analyze: [system], user(images..., text)."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image.data_url}}
                                     for image in images]
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages
