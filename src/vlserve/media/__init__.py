"""Media inputs → validated data URLs.

Every image or video a client sends (data URL, raw base64, http(s) URL, allowed local
file, upload) passes through `MediaNormalizer` before any engine sees it: engines only
ever receive data URLs of bytes we have checked. This package knows nothing of engines
or HTTP frameworks; its failures are ServiceErrors.
"""

from vlserve.media.cache import ImageCache
from vlserve.media.encoding import decode_base64, parse_data_url
from vlserve.media.fetch import GuardedResolver, make_fetch_session
from vlserve.media.images import NormalizedImage
from vlserve.media.memory import tune_allocator
from vlserve.media.normalizer import MediaNormalizer
from vlserve.media.policy import ImageHints, MediaPolicy, PixelBudget
from vlserve.media.sizing import smart_resize
from vlserve.media.video import NormalizedVideo

__all__ = [
    "GuardedResolver", "ImageCache", "ImageHints", "MediaNormalizer", "MediaPolicy", "NormalizedImage",
    "NormalizedVideo", "PixelBudget", "decode_base64", "make_fetch_session", "parse_data_url", "smart_resize",
    "tune_allocator",
]
