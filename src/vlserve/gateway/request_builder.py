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

from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from vlserve.media import ImageHints, MediaNormalizer, NormalizedImage, NormalizedVideo, PixelBudget

_MEDIA_TYPES = ("image_url", "video_url")

# The completions API's own default (OpenAI's, vLLM's and LMDeploy's): an answer of 16
# tokens unless max_tokens says otherwise, whichever engine serves it.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


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
        request = body.model_dump(exclude_none=True, by_alias=True)
        request["model"], context = self._catalog.target(body.model)
        budgets = await self._normalize_media(request["messages"], context)
        request["messages"] = one_system_message(request["messages"])
        return EngineRequest(self._with_defaults(request, context), image_pixels=pixel_bounds(budgets))

    def from_completion(self, body: CompletionRequest) -> EngineRequest:
        request = body.model_dump(exclude_none=True)
        request["model"], context = self._catalog.target(body.model)
        request.setdefault("max_tokens", min(COMPLETIONS_DEFAULT_MAX_TOKENS, context - 1))
        return EngineRequest(self._with_defaults(request, context), kind="text")

    async def images(self, sources: list[str | bytes]) -> list[NormalizedImage]:
        """The images of /infer and /analyze (references or uploaded bytes), refused
        from their headers when together they cannot fit the context."""
        self.media.check_count(len(sources))
        return await self.media.images(sources, max_visual_tokens=self._catalog.context_length())

    def simple(self, *, prompt: str, images: list[NormalizedImage], system_prompt: str | None,
               model: str | None, sampling: dict[str, Any]) -> EngineRequest:
        """The chat request behind /infer and /analyze: [system], user(images..., text)."""
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image.data_url}}
                                         for image in images]
        content.append({"type": "text", "text": prompt})
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        resolved, context = self._catalog.target(model)
        request = {"model": resolved, "messages": messages, **sampling}
        return EngineRequest(self._with_defaults(request, context),
                             image_pixels=pixel_bounds([image.budget for image in images]))

    def _with_defaults(self, request: dict[str, Any], context: int) -> dict[str, Any]:
        settings = self._settings
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        if limit is not None and limit >= context:
            raise ServiceError(ErrorKind.BAD_REQUEST, f"max_tokens={limit} does not fit in the model's context "
                               f"of {context} tokens (the smaller of MAX_MODEL_LEN and the model's own limit).",
                               param="max_tokens")
        if limit is None:
            request["max_tokens"] = min(settings.max_tokens, context - 1)
        request.setdefault("temperature", settings.temperature)
        request.setdefault("top_p", settings.top_p)
        if settings.top_k:
            request.setdefault("top_k", settings.top_k)
        return request

    async def _normalize_media(self, messages: list[dict[str, Any]], context: int) -> list[PixelBudget]:
        """Replace every image_url/video_url in `messages` (in place) by a validated data URL.

        Returns the pixel budget each image was prepared for.
        """
        media = self.media
        _check_media_roles(messages)
        parts = [part for message in messages if isinstance(message.get("content"), list)
                 for part in message["content"] if part.get("type") in _MEDIA_TYPES]
        for part in parts:
            if not (part.get(part["type"]) or {}).get("url"):
                raise ServiceError(ErrorKind.BAD_REQUEST, f"A {part['type']} part has no url.", param="messages")
        if not parts:  # most requests: nothing to fetch or decode, no tasks to start
            return []
        media.check_count(len(parts))
        media.check_total([media.estimated_size(part[part["type"]]["url"]) for part in parts])
        image_parts = [part for part in parts if part["type"] == "image_url"]
        video_parts = [part for part in parts if part["type"] == "video_url"]
        images, videos = await asyncio.gather(
            media.images([part["image_url"]["url"] for part in image_parts],
                         [_hints(part["image_url"]) for part in image_parts], context),
            asyncio.gather(*(media.video(part["video_url"]["url"]) for part in video_parts)))
        found: list[NormalizedImage | NormalizedVideo] = [*images, *videos]
        done = {id(part): result for part, result in zip([*image_parts, *video_parts], found, strict=True)}
        results = [done[id(part)] for part in parts]
        media.check_total([result.nbytes for result in results])
        for part, result in zip(parts, results, strict=True):
            # Engines get the data URL only; the pixel hints have been applied here.
            kept = {"detail": part[part["type"]]["detail"]} if part[part["type"]].get("detail") else {}
            part[part["type"]] = {"url": result.data_url, **kept}
        return [result.budget for result in results if isinstance(result, NormalizedImage)]


def one_system_message(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every system and developer message joined, in order, into one at the start.

    Qwen's chat templates (Qwen3-VL's, which LMDeploy and vLLM use too) render a system
    message only as the first message: any other would be dropped without a word.
    """
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    if not system or (len(system) == 1 and messages[0] is system[0] and system[0]["role"] == "system"):
        return messages
    text = "\n\n".join(_text_of(m.get("content")) for m in system)
    ids = {id(m) for m in system}
    return [{"role": "system", "content": text}, *(m for m in messages if id(m) not in ids)]


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return content or ""


def _check_media_roles(messages: list[dict[str, Any]]) -> None:
    """Images and video go in user messages: the model's chat template has no place for
    them anywhere else (an image in a system message would never reach the model)."""
    for index, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "user" and isinstance(content, list) and \
                any(part.get("type") in _MEDIA_TYPES for part in content):
            raise ServiceError(ErrorKind.BAD_REQUEST, f"messages[{index}] is a {message.get('role')} message with "
                               "an image or video; images and video may only be sent in user messages.",
                               param=f"messages.{index}.content")


def _hints(image_url: dict[str, Any]) -> ImageHints:
    return ImageHints(image_url.get("detail"), image_url.get("min_pixels"), image_url.get("max_pixels"))
