"""MediaNormalizer: any image or video reference → a validated data URL, under a MediaPolicy."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import aiohttp

from vlserve.errors import ErrorKind, ServiceError
from vlserve.media.cache import CacheKey, ImageCache, bytes_key, text_key
from vlserve.media.encoding import decode_base64, parse_data_url, too_large
from vlserve.media.fetch import fetch
from vlserve.media.header import Header, looks_like_image, read_header
from vlserve.media.images import NormalizedImage, prepare_image
from vlserve.media.local_files import read_local, refused
from vlserve.media.memory import DecodeMemory
from vlserve.media.pdf import PDF_MIME, PdfRenderer, RenderedPage, is_pdf
from vlserve.media.policy import ImageHints, MediaPolicy, PixelBudget
from vlserve.media.sizing import visual_tokens
from vlserve.media.video import NormalizedVideo, prepare_video, video_mime

_OTHER_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


class MediaNormalizer:
    """`session` fetches remote media; build it with `make_fetch_session(policy)` so that
    every address connected to is checked. None means remote URLs are refused."""

    def __init__(self, policy: MediaPolicy, session: aiohttp.ClientSession | None = None,
                 on_image: Callable[[NormalizedImage], None] | None = None, cache_bytes: int = 0) -> None:
        self.policy = policy
        self.cache = ImageCache(cache_bytes)
        self._session = session
        self._on_image = on_image  # e.g. metrics of bytes in and out
        # Image work runs on its own threads (one per core), so images are prepared in
        # parallel and a job waiting for decode memory never blocks other thread work.
        self._pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="vlserve-media")
        self.memory = DecodeMemory(policy.decode_memory_bytes)
        self.pdf = PdfRenderer(policy.pdf)  # its worker processes start with the first PDF
        self._preparing: dict[CacheKey, asyncio.Future[NormalizedImage]] = {}  # misses under way

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.pdf.close()

    async def _in_pool(self, fn: Callable, *args: object):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- images ---------------------------------------------------------------------------
    async def image(self, ref: str, hints: ImageHints = ImageHints()) -> NormalizedImage:
        return (await self.images([ref], [hints]))[0]

    async def image_from_bytes(self, data: bytes, hints: ImageHints = ImageHints()) -> NormalizedImage:
        return (await self.images([data], [hints]))[0]

    async def images(self, sources: Sequence[str | bytes], hints: Sequence[ImageHints] | None = None,
                     max_visual_tokens: int | None = None) -> list[NormalizedImage]:
        """Several images (references or uploaded bytes), in parallel; one seen before
        under the same budget comes from the cache (cache.py).

        When all of them together would need more visual tokens than `max_visual_tokens`
        (the context), the request is refused from their headers, before any is decoded.
        """
        budgets = [self.policy.budget_for(hint) for hint in (hints or [ImageHints()] * len(sources))]
        found = await asyncio.gather(*(self._cached_or_loaded(source, budget)
                                       for source, budget in zip(sources, budgets, strict=True)))
        keys, cached, datas = [key for key, _, _ in found], [hit for _, hit, _ in found], [data for *_, data in found]
        headers: list[Header | None] = [None] * len(datas)
        if max_visual_tokens is not None:  # each header is read once: here, and handed on
            headers = await self._headers(datas, budgets, cached)
            self._check_context(headers, cached, budgets, max_visual_tokens)
        images = list(await asyncio.gather(*(
            self._prepare(data, budget, header, key) if hit is None else _done(hit)
            for data, budget, header, key, hit in zip(datas, budgets, headers, keys, cached, strict=True))))
        if self._on_image is not None:
            for image in images:
                self._on_image(image)
        return images

    async def smaller(self, data_url: str, pixels_cap: int, kept: float) -> NormalizedImage:
        """An image the gateway prepared (its data URL), again with `kept` of the pixels the
        engine saw: of its own, or of `pixels_cap` (the budget) when the engine shrank it."""
        data = await self._load_image(data_url)
        header = await self._in_pool(read_header, data, self.policy.budget)
        header.close()
        if header.probe is None:
            raise ServiceError(ErrorKind.INVALID_IMAGE, "The image could not be read to send it smaller.")
        seen = min(header.probe.width * header.probe.height, pixels_cap)
        target = max(self.policy.budget.factor ** 2, int(seen * kept))
        return (await self.images([data], [ImageHints(max_pixels=target)]))[0]

    async def _cached_or_loaded(self, source: str | bytes,
                                budget: PixelBudget) -> tuple[CacheKey | None, NormalizedImage | None, bytes]:
        """(key, the cached image, b"") for an image seen before under this budget, else
        (key, None, its bytes). An inline image is looked up by its text, before decoding."""
        if not self.cache.enabled:
            return None, None, await self._load_image(source)
        if isinstance(source, str) and self._is_inline(source := source.strip()):
            key = text_key(source, budget)  # ~0.25 ms a MB: on the loop, as parsing it was
            hit = self.cache.get(key)
            return (key, hit, b"") if hit is not None else (key, None, await self._load_image(source))
        data = await self._load_image(source)
        key = await self._in_pool(bytes_key, data, budget)
        return key, self.cache.get(key), data

    def _is_inline(self, ref: str) -> bool:
        """The text is the image: a data URL, or base64 where no path can be meant (a path
        names a file whose content may change)."""
        head = ref[:16].lower()
        if head.startswith("data:"):
            return True
        return self.policy.local_dir is None and not _OTHER_SCHEME.match(head) and not head.startswith("file:")

    async def _headers(self, datas: Sequence[bytes], budgets: Sequence[PixelBudget],
                       cached: Sequence[NormalizedImage | None]) -> list[Header | None]:
        async def header(data: bytes, budget: PixelBudget, hit: NormalizedImage | None) -> Header | None:
            return None if hit is not None else await self._in_pool(read_header, data, budget)
        return list(await asyncio.gather(*(header(*each) for each in zip(datas, budgets, cached, strict=True))))

    def _check_context(self, headers: Sequence[Header | None], cached: Sequence[NormalizedImage | None],
                       budgets: Sequence[PixelBudget], max_visual_tokens: int) -> None:
        needed = sum(h.probe.visual_tokens for h in headers if h is not None and h.probe is not None)
        needed += sum(visual_tokens(hit.height, hit.width, budget)
                      for hit, budget in zip(cached, budgets, strict=True) if hit is not None)
        if needed < max_visual_tokens:
            return
        for header in headers:
            if header is not None:
                header.close()
        raise ServiceError(ErrorKind.CONTEXT_TOO_LONG, f"The request's {len(headers)} image(s) need about "
                           f"{needed:,} visual tokens; the model's context is {max_visual_tokens:,} "
                           "tokens (MAX_MODEL_LEN). Send fewer or smaller images, or detail=low.",
                           param="messages")

    async def _prepare(self, data: bytes, budget: PixelBudget, header: Header | None,
                       key: CacheKey | None) -> NormalizedImage:
        """Prepared on the pool, and cached. An image asked for again while it is being
        prepared (a burst of requests about one new photo, or one photo twice in a request)
        waits for that preparation instead of decoding it once more: its result or its
        refusal. A requester that leaves does not stop it for the others."""
        if key is None:
            return await self._in_pool(prepare_image, data, self.policy, budget, self.memory, header)
        preparing = self._preparing.get(key)
        if preparing is None and (done := self.cache.peek(key)) is not None:  # prepared since its lookup
            if header is not None:
                header.close()
            return done
        if preparing is None:
            preparing = self._preparing[key] = asyncio.ensure_future(self._prepare_once(data, budget, header, key))
            preparing.add_done_callback(_retrieve_error)
        elif header is not None:
            header.close()  # read for the context check; the preparation under way has its own
        return await asyncio.shield(preparing)

    async def _prepare_once(self, data: bytes, budget: PixelBudget, header: Header | None,
                            key: CacheKey) -> NormalizedImage:
        try:
            image = await self._in_pool(prepare_image, data, self.policy, budget, self.memory, header)
            self.cache.put(key, image)
            return image
        finally:
            del self._preparing[key]

    async def _load_image(self, source: str | bytes) -> bytes:
        if isinstance(source, bytes):
            return source
        return await self._load(source.strip(), "image", self.policy.max_image_bytes, looks_like_image)

    # --- documents ------------------------------------------------------------------------
    async def image_or_pdf(self, source: str | bytes) -> bytes:
        """The bytes of a reference that may be an image or a PDF (/analyze takes both)."""
        if isinstance(source, bytes):
            return source
        limit = max(self.policy.max_image_bytes, self.policy.pdf.max_bytes)
        return await self._load(source.strip(), "image or PDF", limit, lambda b: looks_like_image(b) or is_pdf(b),
                                ("image/", PDF_MIME))

    async def pdf_pages(self, data: bytes, pages: list[int] | None, max_pages: int | None = None,
                        why: str = "", max_pixels: int | None = None) -> tuple[int, list[RenderedPage]]:
        """The PDF's page count and the pages asked for (None: all), each as a JPEG at the
        pixel budget (or fewer `max_pixels`), to be prepared like any other image."""
        if not is_pdf(data):
            raise ServiceError(ErrorKind.INVALID_PDF, "The file is not a PDF (it does not start with %PDF-).")
        budget = min(max_pixels or self.policy.budget.max_pixels, self.policy.budget.max_pixels)
        return await self.pdf.render(data, pages, budget, max_pages, why)

    async def pdf_from_data_url(self, ref: str) -> bytes:
        return await self._load(ref.strip(), "PDF", self.policy.pdf.max_bytes, is_pdf, (PDF_MIME,))

    # --- video ----------------------------------------------------------------------------
    async def video(self, ref: str) -> NormalizedVideo:
        data = await self._load(ref.strip(), "video", self.policy.max_video_bytes,
                                lambda b: video_mime(b) is not None)
        # base64 of tens of MB: off the event loop, like images
        return await asyncio.to_thread(prepare_video, data, self.policy.max_video_bytes)

    # --- request-wide limits ----------------------------------------------------------------
    def check_count(self, count: int) -> None:
        if count > self.policy.max_images:
            raise ServiceError(ErrorKind.BAD_REQUEST, f"The request has {count} images or videos; the limit "
                               f"is {self.policy.max_images} per request (MEDIA_MAX_IMAGES).")

    def check_total(self, sizes: Sequence[int]) -> None:
        if sum(sizes) > self.policy.max_total_bytes:
            raise too_large("The request's media, all together,", self.policy.max_total_bytes)

    def estimated_size(self, ref: str) -> int:
        """Bytes an inline (base64) reference will decode to; 0 for URLs and paths."""
        if ref[:8].lower().startswith(("http://", "https://", "file:")):
            return 0
        start = ref.find(",") + 1 if ref[:5].lower() == "data:" else 0  # measured, not copied: megabytes
        return (len(ref) - start) * 3 // 4

    # --- where the bytes come from -----------------------------------------------------------
    async def _load(self, ref: str, kind: str, max_bytes: int, is_kind: Callable[[bytes], bool],
                    mimes: tuple[str, ...] | None = None) -> bytes:
        head = ref[:16].lower()
        if head.startswith("data:"):
            return await asyncio.to_thread(parse_data_url, ref, kind, max_bytes, mimes)
        if head.startswith(("http://", "https://")):
            if not self.policy.allow_remote or self._session is None:
                raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "This server does not fetch URLs "
                                   "(MEDIA_ALLOW_REMOTE=false); send the data inline as base64.")
            return await fetch(self._session, ref, self.policy, kind, max_bytes, mimes)
        if head.startswith("file:"):
            return await asyncio.to_thread(read_local, ref, self.policy.local_dir, max_bytes)
        if _OTHER_SCHEME.match(head):
            raise ServiceError(ErrorKind.IMAGE_FETCH_REFUSED, "Only http(s) URLs, data URLs and base64 are accepted.")
        return await asyncio.to_thread(self._inline_or_path, ref, max_bytes, is_kind)

    def _inline_or_path(self, ref: str, max_bytes: int, is_kind: Callable[[bytes], bool]) -> bytes:
        """Raw base64, or a path when the operator allows a media directory.

        Base64 of a JPEG starts with "/9j/": a string that looks like a path is taken as
        inline data only if it decodes to the signature of what it should be.
        """
        path_like = ref.startswith(("/", ".", "~"))
        data, error = None, None
        try:
            data = decode_base64(ref, max_bytes)
        except ServiceError as exc:
            if exc.kind is ErrorKind.TOO_LARGE:
                raise
            error = exc
        if data is not None and (is_kind(data) or (not path_like and self.policy.local_dir is None)):
            return data
        if self.policy.local_dir is not None:
            return read_local(ref, self.policy.local_dir, max_bytes)
        if path_like or error is None:
            raise refused()
        raise error


async def _done(image: NormalizedImage) -> NormalizedImage:
    return image


def _retrieve_error(done: asyncio.Future[NormalizedImage]) -> None:
    """A refusal whose every requester has left is not an "exception never retrieved"."""
    if not done.cancelled():
        done.exception()
