"""Image memory: what decoding an image may hold, a budget for it across requests, and
giving it back to the system after a burst.

Giving it back:

glibc's malloc raises its mmap threshold each time a large block is freed, so later
large blocks (Pillow allocates decoded images in 16 MB blocks) come from per-thread
arenas that are rarely returned: measured on this project's image threads (8 RGBA
4000x4000 PNGs, 4 rounds, 4 threads), RSS stayed 100-250 MB above the baseline after
the burst; with the threshold pinned at 1 MiB it returned to within 2 MB
(malloc_trim after each image also worked, at a cost per image). So the threshold is
pinned once, at start-up. Elsewhere than glibc this does nothing.

It is pinned at 4 MiB, not 1: every block over the threshold is a fresh mapping the
kernel faults in and zeroes, and a request with a 1 MB photo allocates several 1.4 MB
blocks (the body, the parsed string, the request sent on): at 1 MiB that doubled the
gateway's CPU for a repeated photo (6.2 → 2.1 ms in process). The hostile burst of
tests/integration/test_hostile_inputs.py settles 17 MB over its baseline at 4 MiB (8 MB
at 1 MiB; its bound is 64), and RSS stays flat under ten minutes of new photos
(bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("vlserve.media")

_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024


def tune_allocator() -> bool:
    """Pin glibc's mmap threshold; True when it took effect."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        log.debug("not glibc: the allocator is left as it is")
        return False


# Peak bytes per pixel while decoding and shrinking, measured per format (8000x8000 images:
# RGBA PNG ~5, lossless WebP ~16, AVIF ~14, 16-bit ~10, progressive or CMYK JPEG ~8 at
# full scale since draft cannot shrink their coefficient buffers).
_PEAK_BYTES = {"WEBP": 16, "AVIF": 14}


def peak_bytes_per_pixel(img: Any) -> tuple[int, bool]:
    """(peak bytes per pixel, whether JPEG draft scaling applies)."""
    if img.format in ("JPEG", "MPO"):
        progressive = img.info.get("progressive") or img.info.get("progression")
        if progressive or img.mode == "CMYK":
            return 8, False
        return 5, True
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return 10, False
    # The decoded image and its RGB copy are alive together: an RGBA PNG holds 4 + 3 bytes
    # a pixel at its peak (measured: 8900x8900 RGBA grew RSS by 454-528 MiB, not 5 x 79 MP).
    with_copy = len(img.getbands()) + 3
    return max(_PEAK_BYTES.get(img.format or "", 5), with_copy), False


class DecodeMemory:
    """A budget of bytes that image decoding may hold at once, across all requests.

    A job waits (in its worker thread) until its share is free; one larger than the
    whole budget runs alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        cost = min(cost, self.limit)
        with self._changed:
            while self.held + cost > self.limit:
                self._changed.wait()
            self.held += cost
        try:
            yield
        finally:
            with self._changed:
                self.held -= cost
                self._changed.notify_all()
