"""The one builder of engine requests, for every route.

A validated client request (OpenAI chat, or the prompt and images of /infer and
/analyze) becomes an `EngineRequest`: images are validated data URLs (through the media
module), `model` is the engine's own id, settings fill only the sampling fields the
client left out, and the pixel budget the images were prepared for travels as a hint
that each engine sends in its own dialect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .catalog import ModelCatalog
from .config import Settings
from .engines.base import EngineRequest
from .errors import ErrorKind, ServiceError
from .media import ImageHints, MediaNormalizer, NormalizedImage, NormalizedVideo, PixelBudget
from .schemas import ChatCompletionRequest, SamplingFields

_MEDIA_TYPES = ("image_url", "video_url")


def sampling_dict(fields: SamplingFields) -> dict[str, Any]:
    return fields.model_dump(include=set(SamplingFields.model_fields), exclude_none=True)


def pixel_bounds(budgets: list[PixelBudget]) -> tuple[int, int] | None:
    """One (min, max) for the request: engines take one budget for all its images."""
    if not budgets:
        return None
    return min(b.min_pixels for b in budgets), max(b.max_pixels for b in budgets)


class RequestBuilder:
    def __init__(self, settings: Settings, catalog: ModelCatalog, media: MediaNormalizer) -> None:
        self._settings = settings
        self._catalog = catalog
        self.media = media

    async def from_chat(self, body: ChatCompletionRequest) -> EngineRequest:
        request = body.model_dump(exclude_none=True)
        request["model"] = self._catalog.resolve(body.model)
        budgets = await self._normalize_media(request["messages"])
        return EngineRequest(self._with_defaults(request), image_pixels=pixel_bounds(budgets))

    def simple(self, *, prompt: str, images: list[NormalizedImage], system_prompt: str | None,
               model: str | None, sampling: dict[str, Any]) -> EngineRequest:
        """The chat request behind /infer and /analyze: [system], user(images..., text)."""
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image.data_url}}
                                         for image in images]
        content.append({"type": "text", "text": prompt})
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        request = {"model": self._catalog.resolve(model), "messages": messages, **sampling}
        return EngineRequest(self._with_defaults(request),
                             image_pixels=pixel_bounds([image.budget for image in images]))

    def _with_defaults(self, request: dict[str, Any]) -> dict[str, Any]:
        settings = self._settings
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

    async def _normalize_media(self, messages: list[dict[str, Any]]) -> list[PixelBudget]:
        """Replace every image_url/video_url in `messages` (in place) by a validated data URL.

        Returns the pixel budget each image was prepared for.
        """
        media = self.media
        parts = [part for message in messages if isinstance(message.get("content"), list)
                 for part in message["content"] if part.get("type") in _MEDIA_TYPES]
        for part in parts:
            if not (part.get(part["type"]) or {}).get("url"):
                raise ServiceError(ErrorKind.BAD_REQUEST, f"A {part['type']} part has no url.", param="messages")
        media.check_count(len(parts))
        media.check_total([media.estimated_size(part[part["type"]]["url"]) for part in parts])
        results: list[NormalizedImage | NormalizedVideo] = await asyncio.gather(*(
            media.image(part["image_url"]["url"], _hints(part["image_url"])) if part["type"] == "image_url"
            else media.video(part["video_url"]["url"]) for part in parts))
        media.check_total([result.nbytes for result in results])
        for part, result in zip(parts, results, strict=True):
            # Engines get the data URL only; the pixel hints have been applied here.
            kept = {"detail": part[part["type"]]["detail"]} if part[part["type"]].get("detail") else {}
            part[part["type"]] = {"url": result.data_url, **kept}
        return [result.budget for result in results if isinstance(result, NormalizedImage)]


def _hints(image_url: dict[str, Any]) -> ImageHints:
    return ImageHints(image_url.get("detail"), image_url.get("min_pixels"), image_url.get("max_pixels"))
