"""ImageCache: normalised images by the content they were made from.

A chat about one photo sends the photo again with every turn. The gateway's answer for
the same bytes under the same pixel budget is always the same (decoding, resizing and
encoding are deterministic), so the first answer is kept and later ones cost a hash:
no base64 decode, no decode, no resize, no encode, and the engine gets byte-identical
data each turn, which is what lets its own prefix and encoder caches hit.

Keys are a BLAKE3 hash of the image as received, with the budget it is prepared for:
for inline images the text of the data URL or base64 itself (so a hit decodes nothing),
for a fetched URL or an upload its bytes. A cryptographic hash, because the cache is
shared by every client and a collision one could construct would hand another client's
image to a request; BLAKE3 because it is ~3x SHA-256's speed (a 1 MB photo's base64 in
~0.25 ms). The rest of the media policy is fixed for the life of the process, which is
the cache's life. Bounded in bytes of data URLs kept (least recently used out first);
refusals are not kept. Thread-safe: lookups happen on the event loop, hashing anywhere.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from blake3 import blake3

from vlserve.media.images import NormalizedImage
from vlserve.media.policy import PixelBudget

ENTRY_OVERHEAD_BYTES = 512  # the NormalizedImage and the dict's entry, roughly


@dataclass(frozen=True)
class CacheKey:
    form: Literal["text", "bytes"]  # what was hashed: text and bytes never share a key
    digest: bytes
    budget: PixelBudget


def text_key(text: str, budget: PixelBudget) -> CacheKey:
    """The key of an inline image (a data URL or base64), from its text as received."""
    return CacheKey("text", blake3(text.encode("utf-8", "surrogatepass")).digest(), budget)


def bytes_key(data: bytes, budget: PixelBudget) -> CacheKey:
    return CacheKey("bytes", blake3(data).digest(), budget)


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    bytes: int
    entries: int
    max_bytes: int


class ImageCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, NormalizedImage] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: CacheKey) -> NormalizedImage | None:
        with self._lock:
            image = self._entries.get(key)
            if image is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return image

    def peek(self, key: CacheKey) -> NormalizedImage | None:
        """The entry, if any, not counted as a lookup (the request's lookup was counted)."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: CacheKey, image: NormalizedImage) -> None:
        size = _size(image)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= _size(old)
            self._entries[key] = image
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= _size(evicted)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._bytes, len(self._entries), self.max_bytes)


def _size(image: NormalizedImage) -> int:
    return len(image.data_url) + ENTRY_OVERHEAD_BYTES
