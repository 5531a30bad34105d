"""The one builder of engine requests, for every route.

A validated client request (OpenAI chat, or the prompt and images of /infer and
/analyze) becomes an `EngineRequest`: images are validated data URLs (through the media
module), `model` is the engine's own id, settings fill only the sampling fields the
client left out, and the pixel budget the images were prepared for travels as a hint
that each engine sends in its own dialect.
"""

from __future__ import annotations

import asyncio
from typing import cast

from vlserve.config import Settings
from vlserve.engines.base import EngineRequest
from vlserve.errors import ErrorKind, ServiceError
from vlserve.gateway.catalog import ModelCatalog
from vlserve.gateway.documents import pages_for_files
from vlserve.gateway.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from vlserve.gateway.token_bound import token_bound, visual_kinds
from vlserve.media import ImageHints, MediaNormalizer, NormalizedImage, NormalizedVideo, PixelBudget
from vlserve.openai_types import ChatMessage, ContentPart, EngineBody, JSONObject, MediaURL, max_tokens_of, text_of

_MEDIA_TYPES = ("image_url", "video_url")

# The completions API's own default (OpenAI's, vLLM's and LMDeploy's): an answer of 16
# tokens unless max_tokens says otherwise, whichever engine serves it.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def sampling_dict(fields: SamplingFields) -> JSONObject:
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
        # The schema (schemas.py) has checked every field EngineBody lists.
        request = cast(EngineBody, body.model_dump(exclude_none=True, by_alias=True))
        request["model"], context = self._catalog.target(body.model)
        await pages_for_files(request["messages"], self.media)  # PDFs (file parts) become page images
        budgets, image_ids = await self._normalize_media(request["messages"], context)
        request["messages"] = one_system_message(request["messages"])
        return self._bounded(EngineRequest(self._with_defaults(request, context), image_pixels=pixel_bounds(budgets),
                                           image_ids=image_ids), context)

    def from_completion(self, body: CompletionRequest) -> EngineRequest:
        request = cast(EngineBody, body.model_dump(exclude_none=True))
        request["model"], context = self._catalog.target(body.model)
        request.setdefault("max_tokens", min(COMPLETIONS_DEFAULT_MAX_TOKENS, context - 1))
        return self._bounded(EngineRequest(self._with_defaults(request, context), kind="text"), context)

    async def images(self, sources: list[str | bytes]) -> list[NormalizedImage]:
        """The images of /infer and /analyze (references or uploaded bytes), refused
        from their headers when together they cannot fit the context."""
        self.media.check_count(len(sources))
        return await self.media.images(sources, max_visual_tokens=self._catalog.context_length())

    async def page_image(self, jpeg: bytes) -> NormalizedImage:
        """A PDF page's image (media/pdf.py), prepared as any image is: each page is its own
        engine call, so each is checked against the context alone."""
        return (await self.media.images([jpeg], max_visual_tokens=self._catalog.context_length()))[0]

    def simple(self, *, prompt: str, images: list[NormalizedImage], system_prompt: str | None,
               model: str | None, sampling: JSONObject) -> EngineRequest:
        """The chat request behind /infer and /analyze: [system], user(images..., text)."""
        content: list[ContentPart] = [{"type": "image_url", "image_url": {"url": image.data_url}}
                                      for image in images]
        content.append({"type": "text", "text": prompt})
        messages: list[ChatMessage] = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        resolved, context = self._catalog.target(model)
        # `sampling` holds SamplingFields, validated by the schema: EngineBody's own fields.
        request = cast(EngineBody, {"model": resolved, "messages": messages, **sampling})
        return self._bounded(EngineRequest(self._with_defaults(request, context),
                                           image_pixels=pixel_bounds([image.budget for image in images]),
                                           image_ids=tuple(image.content_id for image in images)), context)

    def _bounded(self, request: EngineRequest, context: int) -> EngineRequest:
        """With its token bound and image count, for the key's limits (token_bound.py)."""
        settings = self._settings
        most_pixels = request.image_pixels[1] if request.image_pixels else settings.media_image_max_pixels
        kinds = visual_kinds(request.body)
        request.visuals = len(kinds)  # a video counts once: its frames are the engine's to choose
        # ...and only the context bounds its tokens.
        per_visual = context if "video_url" in kinds else most_pixels // settings.media_image_factor ** 2 + 2
        request.token_bound = token_bound(request.body, request.kind, visuals=request.visuals,
                                          tokens_per_visual=per_visual, context=context)
        return request

    def _with_defaults(self, request: EngineBody, context: int) -> EngineBody:
        settings = self._settings
        limit = max_tokens_of(request)
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

    async def _normalize_media(self, messages: list[ChatMessage],
                               context: int) -> tuple[list[PixelBudget], tuple[str, ...]]:
        """Replace every image_url/video_url in `messages` (in place) by a validated data URL.

        Returns the pixel budget each image was prepared for, and each one's content id.
        """
        media = self.media
        _check_media_roles(messages)
        parts = [part for message in messages for part in _parts(message) if part["type"] in _MEDIA_TYPES]
        for part in parts:
            if not _media_url(part).get("url"):
                raise ServiceError(ErrorKind.BAD_REQUEST, f"A {part['type']} part has no url.", param="messages")
        if not parts:  # most requests: nothing to fetch or decode, no tasks to start
            return [], ()
        media.check_count(len(parts))
        media.check_total([media.estimated_size(_media_url(part)["url"]) for part in parts])
        image_parts = [part for part in parts if part["type"] == "image_url"]
        video_parts = [part for part in parts if part["type"] == "video_url"]
        images, videos = await asyncio.gather(
            media.images([_media_url(part)["url"] for part in image_parts],
                         [_hints(_media_url(part)) for part in image_parts], context),
            asyncio.gather(*(media.video(_media_url(part)["url"]) for part in video_parts)))
        found: list[NormalizedImage | NormalizedVideo] = [*images, *videos]
        done = {id(part): result for part, result in zip([*image_parts, *video_parts], found, strict=True)}
        results = [done[id(part)] for part in parts]
        media.check_total([result.nbytes for result in results])
        for part, result in zip(parts, results, strict=True):
            # Engines get the data URL only; the pixel hints have been applied here.
            sent: MediaURL = {"url": result.data_url}
            if detail := _media_url(part).get("detail"):
                sent["detail"] = detail
            if part["type"] == "image_url":
                part["image_url"] = sent
            else:
                part["video_url"] = sent
        return [image.budget for image in images], tuple(image.content_id for image in images)


def one_system_message(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Every system and developer message joined, in order, into one at the start.

    Qwen's chat templates (Qwen3-VL's, which LMDeploy and vLLM use too) render a system
    message only as the first message: any other would be dropped without a word.
    """
    system = [m for m in messages if m.get("role") in ("system", "developer")]
    if not system or (len(system) == 1 and messages[0] is system[0] and system[0]["role"] == "system"):
        return messages
    text = "\n\n".join(text_of(m.get("content")) for m in system)
    ids = {id(m) for m in system}
    return [{"role": "system", "content": text}, *(m for m in messages if id(m) not in ids)]


def _parts(message: ChatMessage) -> list[ContentPart]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _media_url(part: ContentPart) -> MediaURL:
    """The url object of an image_url or video_url part; one with an empty url when the
    client left it out (refused with a 400 by _normalize_media)."""
    url = part.get("image_url") if part["type"] == "image_url" else part.get("video_url")
    return url if url is not None else {"url": ""}


def _check_media_roles(messages: list[ChatMessage]) -> None:
    """Images and video go in user messages: the model's chat template has no place for
    them anywhere else (an image in a system message would never reach the model)."""
    for index, message in enumerate(messages):
        if message["role"] != "user" and any(part["type"] in _MEDIA_TYPES for part in _parts(message)):
            raise ServiceError(ErrorKind.BAD_REQUEST, f"messages[{index}] is a {message.get('role')} message with "
                               "an image or video; images and video may only be sent in user messages.",
                               param=f"messages.{index}.content")


def _hints(image_url: MediaURL) -> ImageHints:
    return ImageHints(image_url.get("detail"), image_url.get("min_pixels"), image_url.get("max_pixels"))
