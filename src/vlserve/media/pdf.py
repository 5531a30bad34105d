"""PDFs as page images, rendered by PDFium (pypdfium2) in worker processes.

PDFium is C++ reading bytes from anyone: it runs in a pool of worker processes, each
with an address-space limit (MEDIA_PDF_WORKER_MEMORY_BYTES), and a render that takes
longer than MEDIA_PDF_RENDER_TIMEOUT_S has its workers killed. A file that crashes or
stalls its worker fails its own request only; the pool is made anew for the next one.

Each page is rendered at the scale that brings it to the pixel budget (not a fixed DPI:
a page reaches the engine at the budget, like a photo), upright (PDFium applies the
page's /Rotate), and handed on as a JPEG to the same image path as any other image.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import multiprocessing
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from vlserve.errors import ErrorKind, ServiceError

log = logging.getLogger("vlserve.media")

PDF_MIME = "application/pdf"
MAX_SCALE = 8.0  # 576 DPI: a tiny page is not blown up past this to reach the budget
JPEG_QUALITY = 92
_PAGES = re.compile(r"^\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*$")


def is_pdf(data: bytes) -> bool:
    """The PDF header, which may follow up to 1 KB of other bytes (as readers allow)."""
    return b"%PDF-" in data[:1024]


@dataclass(frozen=True)
class PdfLimits:
    max_bytes: int = 32 * 1024 * 1024
    max_pages: int = 64
    workers: int = 2
    render_timeout_s: float = 60.0
    worker_memory_bytes: int = 1024 * 1024 * 1024
    pages_in_flight: int = 16  # a document's pages sent to the engine at once (/analyze)


@dataclass(frozen=True)
class RenderedPage:
    number: int  # 1-based, as people count pages
    jpeg: bytes
    width: int   # the rendered image's pixels
    height: int


MAX_PAGE_NUMBER = 100_000  # no PDF this server reads has more pages; a larger number is a mistake
MAX_PAGES_SPEC = 1000      # characters of a `pages` value


def parse_pages(spec: str | None) -> list[int] | None:
    """ "1-3,7" -> [1, 2, 3, 7] (in the order given, without repeats); None: every page."""
    if spec is None or not spec.strip():
        return None
    if len(spec) > MAX_PAGES_SPEC or not _PAGES.match(spec):
        raise ServiceError(ErrorKind.BAD_REQUEST, "pages must be page numbers and ranges such as \"1-3,7\" "
                           f"(at most {MAX_PAGES_SPEC} characters).", param="pages")
    numbers: dict[int, None] = {}  # ordered, and a repeat costs nothing
    for item in spec.split(","):
        first, _, last = item.partition("-")
        start, end = int(first), int(last or first)
        if start < 1 or end < start or end > MAX_PAGE_NUMBER:
            raise ServiceError(ErrorKind.BAD_REQUEST, f"pages: {item.strip()!r} is not a range of pages from 1 to "
                               f"{MAX_PAGE_NUMBER:,}.", param="pages")
        numbers.update(dict.fromkeys(range(start, end + 1)))
        if len(numbers) > MAX_PAGE_NUMBER:
            break
    return list(numbers)


# --- in the worker process ---------------------------------------------------------------

def _limit_worker(memory_bytes: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _page_problem(count: int, numbers: list[int] | None, max_pages: int) -> tuple | None:
    """("error", kind, detail) when the pages asked for cannot be given, else None."""
    if count == 0:
        return ("error", "broken", "it has no pages")
    if numbers is None and count > max_pages:
        return ("error", "too_many", count)
    if numbers is not None and any(n > count for n in numbers):
        return ("error", "no_such_page", count)
    if numbers is not None and len(numbers) > max_pages:
        return ("error", "too_many", len(numbers))
    return None


def _open(data: bytes) -> tuple:
    import pypdfium2 as pdfium

    try:
        return ("ok", pdfium.PdfDocument(data))
    except pdfium.PdfiumError as exc:
        return ("error", "encrypted" if getattr(exc, "err_code", None) == 4 else "broken", str(exc))


def _count(data: bytes) -> tuple:
    """("ok", page count) or ("error", kind, detail)."""
    opened = _open(data)
    if opened[0] != "ok":
        return opened
    with contextlib.closing(opened[1]) as pdf:
        return ("ok", len(pdf))


def _render(data: bytes, numbers: list[int] | None, max_pixels: int, max_pages: int) -> tuple:
    """("ok", page count, [(number, jpeg, width, height)]) or ("error", kind, detail)."""
    opened = _open(data)
    if opened[0] != "ok":
        return opened
    with contextlib.closing(opened[1]) as pdf:
        count = len(pdf)
        problem = _page_problem(count, numbers, max_pages)
        if problem is not None:
            return problem
        wanted = numbers if numbers is not None else list(range(1, count + 1))
        return ("ok", count, [_render_page(pdf[n - 1], n, max_pixels) for n in wanted])


def _render_page(page, number: int, max_pixels: int) -> tuple[int, bytes, int, int]:
    width, height = page.get_size()  # points, after the page's rotation
    if width <= 0 or height <= 0:
        raise ValueError(f"page {number} has no area")
    scale = min(MAX_SCALE, math.sqrt(max_pixels / (width * height)))
    while math.ceil(width * scale) * math.ceil(height * scale) > max_pixels:  # PDFium rounds sizes up
        scale *= 0.999
    image = page.render(scale=scale).to_pil().convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return number, out.getvalue(), image.width, image.height


# --- in the gateway ------------------------------------------------------------------------

class _PoolBroken(Exception):
    """A job's pool died under it (its worker crashed or was killed)."""


class PdfRenderer:
    """The worker pool, and a job per worker at a time: a job's time limit starts when a
    worker takes it, never while it waits for one."""

    def __init__(self, limits: PdfLimits) -> None:
        self.limits = limits
        self._pool: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None  # made on the running loop

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a clean interpreter, not a fork of a gateway with threads and an event loop
            self._pool = ProcessPoolExecutor(self.limits.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_limit_worker, initargs=(self.limits.worker_memory_bytes,))
        return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Kill a pool's workers (one may be stuck in PDFium); the next job makes a new pool."""
        if self._pool is pool:
            self._pool = None
        for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop a running task
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., tuple], *args: object) -> tuple:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.workers)
        async with self._slots:
            pool = self._workers()
            try:
                job = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
                return await asyncio.wait_for(job, self.limits.render_timeout_s)
            except TimeoutError:
                self._discard(pool)
                raise
            except BrokenProcessPool:
                self._discard(pool)
                raise _PoolBroken() from None

    async def render(self, data: bytes, pages: list[int] | None, max_pixels: int, max_pages: int | None = None,
                     why: str = "") -> tuple[int, list[RenderedPage]]:
        """(the PDF's page count, the pages asked for, rendered), or a ServiceError that says why not.
        `max_pages` (at most MEDIA_MAX_PDF_PAGES) and `why`: a tighter page limit and what sets it."""
        limits = self.limits
        max_pages = min(max_pages or limits.max_pages, limits.max_pages)
        why = why if max_pages < limits.max_pages else "MEDIA_MAX_PDF_PAGES"
        if len(data) > limits.max_bytes:
            raise ServiceError(ErrorKind.TOO_LARGE, f"The PDF is larger than the limit of {limits.max_bytes:,} bytes "
                               "(MEDIA_MAX_PDF_BYTES).")
        for attempt in range(2):  # a pool that another file broke is not this file's fault: once more
            try:
                outcome = await self._render_in_parts(data, pages, max_pixels, max_pages)
            except TimeoutError:
                raise ServiceError(ErrorKind.INVALID_PDF, f"The PDF could not be rendered within "
                                   f"{limits.render_timeout_s:g} s (MEDIA_PDF_RENDER_TIMEOUT_S).") from None
            except _PoolBroken:
                log.warning("a PDF renderer worker died; the pool is made anew")
                if attempt == 0:
                    continue
                raise ServiceError(ErrorKind.INVALID_PDF, "The PDF could not be rendered: its renderer failed on it "
                                   "(a broken or hostile file, or one over MEDIA_PDF_WORKER_MEMORY_BYTES).") from None
            except Exception as exc:  # raised in the worker: a page PDFium could not render, memory over its limit
                raise ServiceError(ErrorKind.INVALID_PDF, f"The PDF could not be rendered ({type(exc).__name__}: "
                                   f"{exc}).") from None
            return _unpacked(outcome, max_pages, why)
        raise AssertionError("unreachable")

    async def _render_in_parts(self, data: bytes, pages: list[int] | None, max_pixels: int, max_pages: int) -> tuple:
        """The pages split over the workers (each renders a run of them), in page order."""
        if self.limits.workers == 1 or (pages is not None and len(pages) == 1):
            return await self._run(_render, data, pages, max_pixels, max_pages)
        counted = await self._run(_count, data)
        if counted[0] != "ok":
            return counted
        count = counted[1]
        problem = _page_problem(count, pages, max_pages)
        if problem is not None:
            return problem
        wanted = pages if pages is not None else list(range(1, count + 1))
        size = math.ceil(len(wanted) / self.limits.workers)
        parts = await asyncio.gather(*(self._run(_render, data, wanted[at:at + size], max_pixels, max_pages)
                                       for at in range(0, len(wanted), size)))
        for part in parts:
            if part[0] != "ok":
                return part
        return ("ok", count, [page for part in parts for page in part[2]])

    def close(self) -> None:
        if self._pool is not None:
            self._discard(self._pool)


def _unpacked(outcome: tuple, max_pages: int, why: str) -> tuple[int, list[RenderedPage]]:
    if outcome[0] == "ok":
        _, count, pages = outcome
        return count, [RenderedPage(*page) for page in pages]
    _, kind, detail = outcome
    if kind == "encrypted":
        raise ServiceError(ErrorKind.INVALID_PDF, "The PDF is encrypted with a password; send it without one.")
    if kind == "too_many":
        raise ServiceError(ErrorKind.TOO_LARGE, f"The PDF has {detail:,} pages; the limit is {max_pages:,} ({why}). "
                           "Ask for some of them with `pages` (e.g. \"1-10\") on /analyze, which reads a "
                           "document page by page.")
    if kind == "no_such_page":
        raise ServiceError(ErrorKind.BAD_REQUEST, f"The PDF has {detail:,} pages; pages names one past its end.",
                           param="pages")
    raise ServiceError(ErrorKind.INVALID_PDF, f"The file is not a PDF that can be read ({detail}).")
